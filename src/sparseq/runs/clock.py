"""Where a process's time goes: seconds since it started, and JAX's compile time.

timing.jsonl gets phase events from these (start of the loop, first chunk, compile
seconds, end of the loop, wrap-up), so `bench/throughput.py --only process` can split
a run's wall time into start-up, compile, loop and wrap-up.
"""

import os
import time

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compile = {"seconds": 0.0, "programs": 0}
_listening = False
_IMPORTED = time.time()  # fallback start where /proc is missing


def process_started() -> float:
    """The wall-clock time (time.time()) this process started: from /proc on Linux
    (10 ms resolution), else when this module was imported."""
    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as uptime:
            up = float(uptime.read().split()[0])
        ticks = os.sysconf("SC_CLK_TCK")
        return time.time() - up + int(fields[19]) / ticks
    except (OSError, ValueError, IndexError):
        return _IMPORTED


def process_seconds() -> float:
    return time.time() - process_started()


def _on_duration(event: str, duration: float, **_: object) -> None:
    if event in _COMPILE_EVENTS:
        _compile["seconds"] += duration
        if event == "/jax/core/compile/backend_compile_duration":
            _compile["programs"] += 1


def compile_totals() -> tuple[float, int]:
    """(seconds spent tracing, lowering and compiling, backend compilations) since the
    first call of this function in the process."""
    global _listening
    if not _listening:
        import jax

        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        _listening = True
    return _compile["seconds"], _compile["programs"]
