"""sparseq: sparse and target-efficient deep Q-learning on JAX and Equinox.

Stages (pure Equinox modules over explicit state pytrees):
    collect.EnvpoolCollector, replay.UniformReplay, learners.QLearner,
    operators.TargetSync, composed by pipeline.Pipeline.
Pipeline files: config.load_pipeline -> config.build.build_pipeline -> run.train.
"""

__version__ = "0.1.0"
