"""envpool's XLA calls under names and operands that do not change between processes.

envpool 1.2.5 registers every pool's calls as `{class}_{id(pool)}_{method}` and passes
the pool's address as an attribute, so the program of a training loop embeds its pool:
JAX's persistent cache never serves it, and every checkpoint boundary (a new pool)
compiles the loop again. The pool's address is also in the handle every call takes as
its first operand, so a small C shim (envpool_ffi.c) registered as
`sparseq_envpool_{class}_{method}` reads it from there and calls envpool's own handler
with the attribute added. The loop's program is then the same for every pool of a
task: a boundary and a second run load it from the cache.

The shim is compiled once per source and jaxlib version into the user cache folder with
the system's C compiler (`$CC`, else `cc`). Where there is none, where the backend is
not the CPU (envpool's GPU handlers are left to envpool), or with
SPARSEQ_ENVPOOL_FFI=off, the collector uses envpool's own calls.
"""

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENV_VAR = "SPARSEQ_ENVPOOL_FFI"
SOURCE = Path(__file__).with_name("envpool_ffi.c")

_lock = threading.Lock()
_library: Any = None  # the loaded shim, False once it could not be built
_registered: dict[str, int] = {}  # target name -> slot


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparseq" / "ffi"


def _build(target: Path) -> None:
    """Compiles the shim into `target` (atomically: concurrent runs may build it too)."""
    import jax.ffi

    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise OSError("no C compiler")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        command = [compiler, "-O2", "-shared", "-fPIC", f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(built)]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        os.replace(built, target)


def library() -> Any:
    """The loaded shim, or None where it cannot be used (see the module's docstring)."""
    global _library
    with _lock:
        if _library is None:
            _library = _load() or False
        return _library or None


def _load() -> Any:
    import jax
    import jaxlib

    if os.environ.get(ENV_VAR, "").strip().lower() in ("off", "0", "false", "no"):
        return None
    if jax.default_backend() != "cpu":
        return None
    digest = hashlib.sha256(SOURCE.read_bytes() + jaxlib.__version__.encode() + platform.machine().encode())
    target = cache_folder() / f"envpool_ffi-{digest.hexdigest()[:16]}.so"
    try:
        if not target.exists():
            _build(target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError):
        return None
    lib.sparseq_set_target.argtypes = (ctypes.c_int, ctypes.c_void_p)
    return lib


def _capsule_pointer(capsule: Any) -> int:
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, (ctypes.py_object,)
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, (ctypes.py_object, ctypes.c_char_p)
    return get_pointer(capsule, get_name(capsule))


def _target(lib: Any, name: str, cpu_capsule: Any) -> bool:
    """Registers `name` on a slot forwarding to envpool's handler; False when full."""
    import jax

    with _lock:
        if name in _registered:
            return True
        slot = len(_registered)
        if slot >= lib.sparseq_slots():
            return False
        lib.sparseq_set_target(slot, _capsule_pointer(cpu_capsule))
        function = getattr(lib, f"sparseq_slot_{slot // 8}_{slot % 8}")
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(function), platform="cpu", api_version=1)
        _registered[name] = slot
        return True


def _call(name: str, specs: tuple[Any, Any]) -> Callable:
    import jax
    import numpy as np

    in_specs, out_specs = ([(tuple(shape), np.dtype(dtype)) for dtype, shape in side] for side in specs)
    results = [jax.ShapeDtypeStruct(shape, jax.dtypes.canonicalize_dtype(dtype)) for shape, dtype in out_specs]
    return jax.ffi.ffi_call(
        name,
        results if len(results) > 1 else results[0],
        has_side_effect=True,
        input_layouts=[tuple(range(len(shape))) for shape, _ in in_specs],
        output_layouts=[tuple(range(len(shape))) for shape, _ in out_specs]
        if len(results) > 1
        else tuple(range(len(out_specs[0][0]))),
        input_output_aliases={0: 0},
    )


def stable_calls(env: Any) -> tuple[Callable, Callable] | None:
    """(recv, send) for the pool `env` under stable names, as envpool's `env.xla()`
    returns them (`recv(handle) -> (handle, step)`, `send(handle, action) -> handle`);
    None where the shim cannot be used."""
    lib = library()
    if lib is None:
        return None
    calls = {}
    for method, (_handle, specs, (cpu_capsule, _gpu)) in env._xla():
        name = f"sparseq_envpool_{type(env).__name__}_{method}"
        if not _target(lib, name, cpu_capsule):
            return None
        calls[method] = _call(name, specs)
    raw_recv, raw_send = calls["recv"], calls["send"]

    def recv(handle: Any) -> tuple[Any, Any]:
        handle, *state = raw_recv(handle)
        return handle, env._to(state, reset=False, return_info=True)

    def send(handle: Any, action: Any, env_id: Any = None) -> Any:
        action = env._from(action, env_id)
        env._check_action(action)
        return raw_send(handle, *action)

    return recv, send
