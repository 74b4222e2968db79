"""Pipeline files: schema, loading, validation, and building the stages."""

from sparseq.config.errors import ConfigError
from sparseq.config.loader import load_pipeline
from sparseq.config.schema import PipelineConfig

__all__ = ["ConfigError", "PipelineConfig", "load_pipeline"]
