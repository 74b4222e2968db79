"""What the fidelity benches share: the algorithm list flag and a fresh output folder."""

import time
from collections.abc import Collection
from pathlib import Path


def chosen_algorithms(text: str, known: Collection[str]) -> list[str]:
    """ "dqn, isdqn" -> ["dqn", "isdqn"]; exits with a one-line message on an unknown name."""
    algorithms = [a.strip() for a in text.split(",") if a.strip()]
    for a in algorithms:
        if a not in known:
            raise SystemExit(f"unknown algorithm {a!r}; known: {', '.join(known)}")
    return algorithms


def fresh_out_dir(root: str) -> Path:
    """ROOT/<time>/, created."""
    out_dir = Path(root) / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir
