"""How fast a run answers Ctrl-C: signal -> loop stopped, and signal -> process exit.

    python bench/stop_latency.py                 Atari (dqn-atari) and CartPole
    python bench/stop_latency.py --only atari    one of them
    python bench/stop_latency.py --after 120     seconds of training before the signal

Each case starts `sparseq train` in a temporary folder, lets it train for `--after`
seconds (compilation included), sends SIGINT, and times, from the signal, the runner's
"stopped at step" line (the loop has stopped; the checkpoint save starts) and the exit
of the process (checkpoint written). Targets: loop stop <= 10 s on every task (issue 12).
The Atari case uses a 100k replay so the save stays small; a 1M replay's save time is
bench/memory.py's business. Nothing is asserted: the figures are printed.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

COMMON = ["--no-run.progress", "--run.wandb.mode=disabled"]
CASES = {
    # The papers' Atari protocol (log_every 50k, ~80 steps/s on 2 CPU cores: one chunk
    # would be ~10 minutes without the wall-time bound), warm-up cut so it learns soon.
    "atari": ["dqn-atari", "--replay.capacity=100000", "--learner.warmup=2000", *COMMON],
    "cartpole": ["dqn-cartpole", "--run.total-steps=10000000", "--run.log-every=1000000", *COMMON],
}


def measure(args: list[str], after: float) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}
        process = subprocess.Popen(
            [sys.executable, "-m", "sparseq.cli", "train", *args],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        stopped_at: list[float] = []
        lines: list[str] = []

        def read() -> None:
            for line in process.stderr:
                lines.append(line.rstrip())
                if "stopped at step" in line and not stopped_at:
                    stopped_at.append(time.perf_counter())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(after)
        if process.poll() is not None:
            return {"error": "finished before the signal: " + (lines[-1] if lines else "")}
        signalled = time.perf_counter()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=600)
        exited = time.perf_counter()
        reader.join(timeout=5)
        step = next((m.group(1) for line in lines if (m := re.search(r"stopped at step ([\d,]+)", line))), "?")
        loop = stopped_at[0] - signalled if stopped_at else float("nan")
        return {"loop_stop_s": loop, "exit_s": exited - signalled, "step": step, "rc": process.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(CASES), nargs="*")
    parser.add_argument("--after", type=float, default=90.0, help="seconds of training before SIGINT")
    options = parser.parse_args()
    print(f"Ctrl-C latency (SIGINT after {options.after:.0f} s of training; target: loop stop <= 10 s)")
    for name in options.only or sorted(CASES):
        result = measure(CASES[name], options.after)
        if "error" in result:
            print(f"  {name:9s} {result['error']}")
            continue
        print(
            f"  {name:9s} loop stopped {result['loop_stop_s']:6.2f} s after the signal (step {result['step']}), "
            f"process exited {result['exit_s']:6.2f} s after it (checkpoint saved), rc {result['rc']}"
        )


if __name__ == "__main__":
    main()
