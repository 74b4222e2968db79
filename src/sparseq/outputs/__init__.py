"""What users read and ship: reports over run folders, plots, Atari reference scores,
sparse policy export, the numpy policy loader, and greedy evaluation of a policy.

May import sparseq.pipeline (to rebuild networks from a run's pipeline.toml),
sparseq.stages and sparseq.types; never runs or cli.
"""
