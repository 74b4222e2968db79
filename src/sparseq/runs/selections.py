"""EauDeQN's selections as a CSV in the run folder: one row per target update.

A log point keeps only the last value of each operator metric; selections happen at
every target update (every 200 steps on the small tasks), so the runner appends each
chunk's selections here: the step, the index picked, the target's overall sparsity,
every network's summed loss over the period, and every network's sparsity after the
population was rebuilt.
"""

from pathlib import Path

import numpy as np

SELECTIONS_FILE = "selections.csv"


def selection_rows(metrics: dict[str, np.ndarray]) -> list[list[float]]:
    """Rows [steps, selected, target_sparsity, loss_sum_0.., sparsity_0..] of the
    cycles of a chunk whose target update was a selection (none without PruneSelect)."""
    needed = ("target_updated", "population/selected", "population/loss_sum", "population/sparsity")
    if any(name not in metrics for name in needed):
        return []
    due = np.asarray(metrics["target_updated"]).astype(bool).reshape(-1)
    rows = []
    for c in np.nonzero(due)[0]:
        rows.append(
            [
                int(metrics["steps"][c]),
                int(metrics["population/selected"][c]),
                float(metrics["sparsity/overall"][c]),
                *(float(x) for x in np.asarray(metrics["population/loss_sum"][c]).reshape(-1)),
                *(float(x) for x in np.asarray(metrics["population/sparsity"][c]).reshape(-1)),
            ]
        )
    return rows


def append_selections(folder: Path, metrics: dict[str, np.ndarray], step_unit: str = "env_steps") -> None:
    """Appends the chunk's selections to folder/selections.csv (header on first write);
    the first column is the run's step counter, named `step_unit`."""
    rows = selection_rows(metrics)
    if not rows:
        return
    path = folder / SELECTIONS_FILE
    k = np.asarray(metrics["population/loss_sum"]).shape[-1]
    new = not path.exists()
    with path.open("a") as handle:
        if new:
            losses = ",".join(f"loss_sum_{i}" for i in range(k))
            sparsities = ",".join(f"sparsity_{i}" for i in range(k))
            handle.write(f"{step_unit},selected,target_sparsity,{losses},{sparsities}\n")
        for row in rows:
            handle.write(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) + "\n")


def truncate_selections(folder: Path, env_steps: int) -> None:
    """Keeps the rows up to `env_steps` (a resumed run restarts from its checkpoint)."""
    path = folder / SELECTIONS_FILE
    if not path.exists():
        return
    header, *rows = path.read_text().splitlines(keepends=True)
    kept = [row for row in rows if int(row.split(",", 1)[0]) <= env_steps]
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(header + "".join(kept))
    tmp.replace(path)
