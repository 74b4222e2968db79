"""Runs: the host loop over the jitted chunk, checkpoints and exact resume, the run
folder's logs, evaluation during training, and the selection records of EauDeQN.

May import sparseq.outputs, sparseq.pipeline, sparseq.stages and sparseq.types; never cli.
"""
