"""The pipeline: the stage protocols, the Pipeline that composes stages into one pure
training step, and the pipeline files (schema, loader, validation, build, registry).

May import sparseq.stages and sparseq.types; never runs, outputs or cli.
"""

from sparseq.pipeline.compose import Exploration, Pipeline, TrainState

__all__ = ["Exploration", "Pipeline", "TrainState"]
