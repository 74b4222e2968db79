"""Runs a peer script under another interpreter, a bench venv's, and returns its JSON
result; None, after one printed line, when it can't.

- `run_sbx`: bench/peers/sbx_sac.py (SBX SAC/CrossQ, /work/bench-venv).
- `run_rejax`: bench/peers/rejax_dqn.py (rejax DQN, S seeds vmapped, /work/bench-venv-rejax).

    from peers.run_peer import run_rejax, run_sbx      # bench/ is on sys.path under bench/*.py
    row = run_sbx("/work/bench-venv/bin/python", "HalfCheetah-v5", steps=20_000, warmup=5_000, seed=0)
    row = run_rejax("/work/bench-venv-rejax/bin/python", seeds=8, steps=20_000)

Also a command line: python bench/peers/run_peer.py --python /work/bench-venv/bin/python --steps 6500
(`--peer rejax --python /work/bench-venv-rejax/bin/python --seeds 8` for rejax).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "sbx_sac.py"
REJAX_SCRIPT = HERE / "rejax_dqn.py"
README = "bench/peers/README.md"


def _skip(reason: str, peer: str = "SBX") -> None:
    print(f"{peer} peer skipped: {reason} (see {README})", flush=True)


def _tail(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _run_json(peer: str, python: str, script: Path, args: list[str], what: str, timeout: float) -> dict | None:
    """Runs `python script *args` and returns the last JSON line of its stdout parsed; None
    after one "<peer> peer skipped: ..." line when the interpreter is missing or can't
    start, the run exits non-zero or runs past `timeout` (`what` names it there), or no
    JSON line comes out."""
    exe = python if os.sep in python else shutil.which(python)
    if not exe or not os.path.isfile(exe) or not os.access(exe, os.X_OK):
        _skip(f"{python} not found", peer)
        return None
    try:
        proc = subprocess.run([exe, str(script), *args], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        _skip(f"{what} ran past {timeout:.0f} s", peer)
        return None
    except OSError as e:
        _skip(f"{python} could not start ({e})", peer)
        return None
    if proc.returncode != 0:
        _skip(f"{python} exited {proc.returncode}: {_tail(proc.stderr or proc.stdout)}", peer)
        return None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    _skip(f"no JSON line in the output of {python}: {_tail(proc.stdout)}", peer)
    return None


def run_sbx(
    python: str, env: str, steps: int, warmup: int, seed: int, algo: str = "sac", timeout: float = 1800
) -> dict | None:
    """The peer's result dict (keys: peer, algo, env, steps, steps_per_s_after_warmup, wall_s,
    measured_steps, last_returns_mean, versions, settings, ...), or None when the interpreter
    is missing, the run fails or times out, or prints no JSON line."""
    args = ["--env", env, "--steps", str(steps), "--warmup", str(warmup), "--seed", str(seed), "--algo", algo, "--json"]
    return _run_json("SBX", python, SCRIPT, args, f"{algo} on {env}", timeout)


def run_rejax(python: str, seeds: int, steps: int, timeout: float = 1800) -> dict | None:
    """rejax's DQN on gymnax CartPole-v1, `seeds` seeds in one vmapped program, `steps` env
    steps each: the result dict (keys: peer, algo, env, seeds, steps, aggregate_steps_per_s,
    compile_s, run_s, eval_returns_mean, versions, settings, ...), or None when the
    interpreter is missing, the run fails or times out, or prints no JSON line."""
    args = ["--seeds", str(seeds), "--steps", str(steps), "--json"]
    return _run_json("rejax", python, REJAX_SCRIPT, args, f"DQN S={seeds} x {steps} steps", timeout)


def main() -> int:
    p = argparse.ArgumentParser(description="Run the SBX SAC/CrossQ or the rejax DQN peer and print its JSON.")
    p.add_argument("--peer", choices=("sbx", "rejax"), default="sbx")
    p.add_argument(
        "--python", default="", help="default: /work/bench-venv/bin/python (rejax: /work/bench-venv-rejax/bin/python)"
    )
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--warmup", type=int, default=5_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--algo", choices=("sac", "crossq"), default="sac")
    p.add_argument("--seeds", type=int, default=1, help="rejax: seeds in one vmapped program")
    p.add_argument("--timeout", type=float, default=1800)
    a = p.parse_args()
    if a.peer == "rejax":
        result = run_rejax(a.python or "/work/bench-venv-rejax/bin/python", a.seeds, a.steps, a.timeout)
    else:
        result = run_sbx(a.python or "/work/bench-venv/bin/python", a.env, a.steps, a.warmup, a.seed, a.algo, a.timeout)
    if result is None:
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
