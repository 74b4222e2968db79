# sparseq recipes. `just setup` creates .venv; the others use it.
venv := ".venv"
py := venv + "/bin/python"

# Create the virtualenv and install sparseq with the dev tools
setup:
    test -d {{venv}} || python3 -m venv {{venv}}
    {{py}} -m pip install -q -e ".[dev]"

# Train a pipeline (default: quickstart); extra args are key overrides
run pipeline="quickstart" *args="":
    {{venv}}/bin/sparseq train {{pipeline}} {{args}}

# The test suite (what CI runs)
test *args="":
    {{py}} -m pytest {{args}}

# Benchmarks: throughput, memory, inference (figures printed, nothing asserted)
bench:
    {{py}} bench/throughput.py
    {{py}} bench/memory.py
    {{py}} bench/inference.py

# Lint
lint:
    {{venv}}/bin/ruff check src tests bench
