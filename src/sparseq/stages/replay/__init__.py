"""Device-resident replay buffers."""

from sparseq.stages.replay.frame_dedup import FrameDedupReplay, FrameDedupState
from sparseq.stages.replay.uniform import ReplayState, UniformReplay

__all__ = ["FrameDedupReplay", "FrameDedupState", "ReplayState", "UniformReplay"]
