"""Runs the SBX peer (bench/peers/sbx_sac.py) under another interpreter, the bench venv's,
and returns its JSON result; None, after one printed line, when it can't.

    from peers.run_peer import run_sbx      # bench/ is on sys.path under bench/*.py
    row = run_sbx("/work/bench-venv/bin/python", "HalfCheetah-v5", steps=20_000, warmup=5_000, seed=0)

Also a command line: python bench/peers/run_peer.py --python /work/bench-venv/bin/python --steps 6500
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().with_name("sbx_sac.py")
README = "bench/peers/README.md"


def _skip(reason: str) -> None:
    print(f"SBX peer skipped: {reason} (see {README})", flush=True)


def _tail(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def run_sbx(
    python: str, env: str, steps: int, warmup: int, seed: int, algo: str = "sac", timeout: float = 1800
) -> dict | None:
    """The peer's result dict (keys: peer, algo, env, steps, steps_per_s_after_warmup, wall_s,
    measured_steps, last_returns_mean, versions, settings, ...), or None when the interpreter
    is missing, the run fails or times out, or prints no JSON line."""
    exe = python if os.sep in python else shutil.which(python)
    if not exe or not os.path.isfile(exe) or not os.access(exe, os.X_OK):
        _skip(f"{python} not found")
        return None
    cmd = [exe, str(SCRIPT), "--env", env, "--steps", str(steps), "--warmup", str(warmup)]
    cmd += ["--seed", str(seed), "--algo", algo, "--json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        _skip(f"{algo} on {env} ran past {timeout:.0f} s")
        return None
    except OSError as e:
        _skip(f"{python} could not start ({e})")
        return None
    if proc.returncode != 0:
        _skip(f"{python} exited {proc.returncode}: {_tail(proc.stderr or proc.stdout)}")
        return None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    _skip(f"no JSON line in the output of {python}: {_tail(proc.stdout)}")
    return None


def main() -> int:
    p = argparse.ArgumentParser(description="Run the SBX SAC/CrossQ peer and print its JSON.")
    p.add_argument("--python", default="/work/bench-venv/bin/python")
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--warmup", type=int, default=5_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--algo", choices=("sac", "crossq"), default="sac")
    p.add_argument("--timeout", type=float, default=1800)
    a = p.parse_args()
    result = run_sbx(a.python, a.env, a.steps, a.warmup, a.seed, a.algo, a.timeout)
    if result is None:
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
