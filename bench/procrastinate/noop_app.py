"""The procrastinate app of `bench/run.sh pg` (see peer.py): one task that
does nothing. `procrastinate --app=noop_app.app worker` imports it, with this
directory on PYTHONPATH; peer.py defers its jobs.
"""

import os

import procrastinate

# Up to 16 deferrals in flight, each on a connection of its own; the worker
# uses a few.
app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("BENCH_PG_DSN", ""), min_size=4, max_size=16
    )
)


@app.task(name="noop")
async def noop() -> None:
    """Does nothing: the queue's own cost is what is measured."""
