"""Device-resident replay buffers."""

from sparseq.replay.uniform import ReplayState, UniformReplay

__all__ = ["ReplayState", "UniformReplay"]
