"""sparseq: sparse and target-efficient deep RL on JAX and Equinox.

Layers, each importing only the ones below it:

    cli.py      the `sparseq` commands
    runs/       the host loop, checkpoints, resume, logs, evaluation during training
    outputs/    reports, plots, reference scores, sparse export, policy loading
    pipeline/   stage protocols, Pipeline, pipeline files (schema, loader, build, registry)
    stages/     collect, replay, networks, learners, operators, sparsity
    types.py    the pytrees that flow between stages

Pipeline files: pipeline.config.load_pipeline -> pipeline.build.build_pipeline ->
runs.train.
"""

__version__ = "0.1.0"
