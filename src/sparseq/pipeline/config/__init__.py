"""Pipeline files: schema, loading, validation, and building the stages."""

from sparseq.pipeline.config.errors import ConfigError
from sparseq.pipeline.config.loader import load_pipeline
from sparseq.pipeline.config.schema import PipelineConfig

__all__ = ["ConfigError", "PipelineConfig", "load_pipeline"]
