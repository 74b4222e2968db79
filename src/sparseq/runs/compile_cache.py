"""JAX's persistent compilation cache, on by default for the command line.

A second run of the same pipeline then loads its programs from disk instead of
compiling them, the training loop included, and so does a checkpoint boundary (a new
pool): sparseq calls envpool under names and operands that do not change with the pool
(stages/collect/envpool_ffi.py). Where that shim cannot be built, programs that step a
pool (the loop, the pool's reset, `pipeline.init`) embed the pool's address and are
compiled anew for every pool (docs/stack-notes.md).

SPARSEQ_COMPILATION_CACHE: a folder, or "off"; default: sparseq/jax under the user
cache folder ($XDG_CACHE_HOME or ~/.cache). A cache folder JAX was already given
(JAX_COMPILATION_CACHE_DIR) is left as it is.
"""

import os
import warnings
from pathlib import Path

ENV_VAR = "SPARSEQ_COMPILATION_CACHE"
OFF = ("off", "0", "false", "no", "none")


def default_cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparseq" / "jax"


def enable_compilation_cache() -> Path | None:
    """Points JAX's persistent cache at the folder; returns it (None when off)."""
    import jax

    setting = os.environ.get(ENV_VAR, "").strip()
    if setting.lower() in OFF:
        return None
    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    folder = Path(setting).expanduser() if setting else default_cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        warnings.warn(f"{folder}: compilation cache off ({error.strerror})", stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Small programs too: a run compiles dozens of them, ~0.1-0.5 s each.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
