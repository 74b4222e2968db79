"""Stage kinds a pipeline file can name, and how `module:Class` kinds are found.

A kind is one of the names below, an entry point of another installed package (groups
`sparseq.learners` and `sparseq.operators`, value `module:Class`), or `module:Class`
itself. A module that is not importable from sys.path is looked for in the folders of
`python_path` (a pipeline file's own folder is added when it names such a module, and
the resolved pipeline.toml keeps it, so a rerun or resume finds the module too).
"""

import difflib
import functools
import importlib
import importlib.metadata
import sys
from pathlib import Path

LEARNERS = {
    "q": "sparseq.stages.learners.q_learner:QLearner",
    "sac": "sparseq.stages.learners.sac:SACLearner",
}
OPERATORS = {
    "target_sync": "sparseq.stages.operators.target_sync:TargetSync",
    "polyak": "sparseq.stages.operators.polyak:Polyak",
    "shared_target_shift": "sparseq.stages.operators.shared_target_shift:SharedTargetShift",
    "prune_select": "sparseq.stages.operators.prune_select:PruneSelect",
    "poly_prune": "sparseq.stages.operators.poly_prune:PolyPrune",
    "match_sparsity": "sparseq.stages.operators.match_sparsity:MatchSparsity",
}
BUILT_IN = {"learner": LEARNERS, "operator": OPERATORS}
ENTRY_POINT_GROUPS = {"learner": "sparseq.learners", "operator": "sparseq.operators"}


class StageKindError(ValueError):
    """A kind that names no stage; the message is one line."""


@functools.cache
def _entry_points(group: str) -> tuple[tuple[str, str], ...]:
    # Scanning the installed distributions costs ~4 ms; a load resolves kinds many times.
    return tuple((entry.name, entry.value) for entry in importlib.metadata.entry_points(group=group))


def known_kinds(role: str) -> dict[str, str]:
    kinds = dict(BUILT_IN[role])
    for name, value in _entry_points(ENTRY_POINT_GROUPS[role]):
        kinds.setdefault(name, value)
    return kinds


def _import_module(module: str, python_path: tuple[str, ...]):
    for folder in python_path:
        if folder not in sys.path:
            sys.path.append(folder)  # after the installed packages: never shadows them
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and module.startswith(error.name):
            searched = f"sys.path and {', '.join(python_path)}" if python_path else "sys.path"
            raise StageKindError(f"module {module!r} not found (searched {searched})") from None
        raise


def module_folder(kind: str, python_path: tuple[str, ...]) -> str | None:
    """The folder of `python_path` that holds the module of a `module:Class` kind.
    Recorded even when the current folder happens to make it importable: a rerun or a
    resume from another folder must find it too."""
    module = kind.split(":", 1)[0].split(".")[0]
    for folder in python_path:
        if (Path(folder) / f"{module}.py").exists() or (Path(folder) / module).is_dir():
            return folder
    return None


def resolve(kind: str, role: str, python_path: tuple[str, ...] = ()) -> type:
    """The stage class of `kind`; StageKindError (one line) if there is none."""
    if not isinstance(kind, str) or not kind:
        raise StageKindError("must be a stage name or module:Class")
    kinds = known_kinds(role)
    target = kinds.get(kind, kind)
    if ":" not in target:
        close = difflib.get_close_matches(kind, kinds, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(kinds))}"
        raise StageKindError(f"unknown {role} kind; {hint} (or name your own as module:Class)")
    module, _, name = target.partition(":")
    try:
        loaded = _import_module(module, python_path)
    except StageKindError:
        raise
    except Exception as error:  # the user's module failed while importing
        raise StageKindError(f"importing module {module!r} failed: {type(error).__name__}: {error}") from None
    cls = loaded
    for part in name.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise StageKindError(f"module {module!r} has no {name!r}")
    if not isinstance(cls, type):
        raise StageKindError(f"{target} is not a class")
    return cls
