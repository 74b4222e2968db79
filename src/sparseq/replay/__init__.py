"""Device-resident replay buffers."""

from sparseq.replay.frame_dedup import FrameDedupReplay, FrameDedupState
from sparseq.replay.uniform import ReplayState, UniformReplay

__all__ = ["FrameDedupReplay", "FrameDedupState", "ReplayState", "UniformReplay"]
