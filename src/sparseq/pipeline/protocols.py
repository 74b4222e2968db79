"""The stage protocols `Pipeline` composes: any object with these methods is a stage.

Shapes: N environments, B batch, A actions. States are explicit pytrees; every method
is pure (the collector's environment step is envpool's own XLA call).
"""

from typing import Any, Protocol

from jax import Array

from sparseq.types import Batch, EpisodeStats, Transition


class Collector(Protocol):
    num_envs: int
    obs_shape: tuple[int, ...]
    obs_dtype: Any

    def init(self) -> Any:
        """A collector state whose `obs` is (N, *obs_shape) (resets the environments)."""

    def step(self, state: Any, actions: Array) -> tuple[Any, Transition, EpisodeStats]:
        """actions: (N,) -> the next state, N transitions and the episode bookkeeping."""

    def send(self, state: Any, actions: Array) -> Any:
        """`step`'s first half: hands the actions (N,) over and returns at once (an
        asynchronous pool steps meanwhile; a synchronous one may step in `receive`)."""

    def receive(self, state: Any, actions: Array) -> tuple[Any, Transition, EpisodeStats]:
        """`step`'s second half, for the `actions` sent last: `step` is `receive(send)`."""


class Replay(Protocol):
    n_step: int

    def init(self, obs_shape: tuple[int, ...], obs_dtype: Any) -> Any: ...

    def add(self, state: Any, transition: Transition) -> Any: ...

    def sample(self, state: Any, key: Array) -> Batch: ...


class Learner(Protocol):
    def init(self, key: Array) -> Any: ...

    def act(self, state: Any, obs: Array, key: Array, epsilon: Array) -> Array:
        """obs: (N, *obs_shape) -> (N,) actions."""

    def update(self, state: Any, batch: Batch) -> tuple[Any, dict[str, Array]]:
        """One gradient step -> the new state and metrics ("loss" (P,) when it has one)."""


class Operator(Protocol):
    def init(self, learner_state: Any) -> Any: ...

    def __call__(
        self, state: Any, learner_state: Any, steps_before: Array, steps_after: Array
    ) -> tuple[Any, Any, dict[str, Array]]: ...
