"""Which envpool tasks sparseq can run, and how to name a wrong one."""

import difflib
import functools


class UnknownTaskError(ValueError):
    """Raised with a suggestion when an envpool task id does not exist."""


@functools.cache
def known_task_ids() -> tuple[str, ...]:
    import envpool

    return tuple(sorted(envpool.list_all_envs()))


def is_atari_task(task_id: str) -> bool:
    """Atari tasks in envpool are the `*-v5` ids backed by the ALE."""
    import envpool.registration as registration

    spec = registration.registry.specs.get(task_id)
    if spec is None:
        return False
    return "atari" in str(spec[0]).lower()


MUJOCO_FAMILIES = ("envpool.mujoco.gym", "envpool.mujoco.dmc")


def task_family(task_id: str) -> str | None:
    """envpool's import path of the task's family ('envpool.mujoco.dmc', ...), or None."""
    import envpool.registration as registration

    spec = registration.registry.specs.get(task_id)
    return None if spec is None else spec[0]


def is_mujoco_task(task_id: str) -> bool:
    """MuJoCo gym (v4/v5) and DeepMind Control tasks: the ones MuJoCo can render."""
    return task_family(task_id) in MUJOCO_FAMILIES


def check_task_id(task_id: str) -> None:
    if task_id in known_task_ids():
        return
    close = difflib.get_close_matches(task_id, known_task_ids(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownTaskError(f"unknown envpool task id {task_id!r}{hint}")
