"""The stages: pure Equinox modules over explicit state pytrees.

collect/    envpool collectors (XLA and host stepping) and task ids
replay/     device-resident replays (uniform ring buffer, frame-deduplicated)
networks/   torsos, multi-head linear outputs, Q-networks, and their options
learners/   learners over a population of value networks (ValueState)
operators/  periodic transformations of a value sub-state (target sync, pruning, ...)
sparsity.py masks and magnitude pruning; schedules.py epsilon schedules
compile_once.py  jit for programs that run once (compiled at low LLVM optimisation)

Stages may import sparseq.types and each other (downwards: operators -> learners ->
networks -> sparsity), never sparseq.pipeline, runs, outputs or cli.
"""
