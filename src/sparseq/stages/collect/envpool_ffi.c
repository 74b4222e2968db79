/* Stable XLA FFI targets for envpool's calls (sparseq.stages.collect.envpool_ffi).
 *
 * envpool passes its pool's address to its handlers as an FFI attribute, so every
 * compiled program that steps a pool embeds that address and no two processes (nor two
 * pools) share one: JAX's persistent cache can never serve the training loop. The pool's
 * address is also the handle operand every call takes as its first argument. A slot
 * here is registered under a name that depends on the pool's class and the method only;
 * at run time it reads the address from the handle operand, adds it as the "handle"
 * attribute and calls envpool's own handler for that class and method.
 */
#include <stdint.h>
#include <string.h>

#include "xla/ffi/api/c_api.h"

#define SPARSEQ_SLOTS 64

typedef XLA_FFI_Error* Handler(XLA_FFI_CallFrame* frame);

static Handler* targets[SPARSEQ_SLOTS];

int sparseq_slots(void) { return SPARSEQ_SLOTS; }

void sparseq_set_target(int slot, void* handler) { targets[slot] = (Handler*)handler; }

static XLA_FFI_Error* forward(int slot, XLA_FFI_CallFrame* frame) {
  Handler* target = targets[slot];
  /* A metadata query (no arguments to read) goes to envpool's handler as it is. */
  if (frame->extension_start != NULL || frame->stage != XLA_FFI_ExecutionStage_EXECUTE ||
      frame->args.size < 1) {
    return target(frame);
  }
  const XLA_FFI_Buffer* handle = (const XLA_FFI_Buffer*)frame->args.args[0];
  int64_t pool = 0;
  memcpy(&pool, handle->data, sizeof(pool));

  XLA_FFI_ByteSpan name = {"handle", 6};
  XLA_FFI_ByteSpan* names[1] = {&name};
  XLA_FFI_AttrType types[1] = {XLA_FFI_AttrType_SCALAR};
  XLA_FFI_Scalar scalar = {XLA_FFI_DataType_S64, &pool};
  void* attrs[1] = {&scalar};

  XLA_FFI_CallFrame patched = *frame;
  patched.attrs.size = 1;
  patched.attrs.types = types;
  patched.attrs.names = names;
  patched.attrs.attrs = attrs;
  return target(&patched);
}

/* Slot 8 * i + j is sparseq_slot_<i>_<j>. */
#define SLOT(i, j) \
  XLA_FFI_Error* sparseq_slot_##i##_##j(XLA_FFI_CallFrame* frame) { return forward(8 * i + j, frame); }
#define SLOTS8(i) SLOT(i, 0) SLOT(i, 1) SLOT(i, 2) SLOT(i, 3) SLOT(i, 4) SLOT(i, 5) SLOT(i, 6) SLOT(i, 7)
SLOTS8(0) SLOTS8(1) SLOTS8(2) SLOTS8(3) SLOTS8(4) SLOTS8(5) SLOTS8(6) SLOTS8(7)
