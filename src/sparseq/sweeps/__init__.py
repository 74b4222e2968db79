"""`sparseq sweep SWEEP.toml`: a grid of runs (pipelines x tasks x seeds x override
axes) executed as Ray tasks, on a local Ray instance by default or on a cluster.
It sits above runs/ (whose train and resume it calls) and may import every layer below
it, never the CLI.

One idea per module:
    spec      reading and checking the sweep file's shape
    grid      expanding it into grid points with readable, deterministic run ids
    check     validating every grid point with the pipeline loader before anything runs
    layout    where everything lives in the sweep folder
    manifest  the expanded grid, written once (sweep.json)
    plan      what each grid point needs on this invocation (skip, new, resume, restart)
    events    the append-only event log that drivers and workers share
    jobs      what one worker needs to run one grid point
    worker    running one grid point in a fresh process
    orphans   waiting for workers of a killed driver before a re-run plans
    tracker   the driver's view of the running runs, fed by events and results
    status    the live status table (status.md / status.json)
    address   probing a Ray address before ray.init can hang on it
    ray_backend, local_backend  the two ways of running the jobs
    command   the `sparseq sweep` command line

See docs/sweeps.md for the file format and the re-run semantics.
"""
