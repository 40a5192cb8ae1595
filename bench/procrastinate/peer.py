"""The procrastinate peer of `bench/run.sh pg`: a task that does nothing,
run by `procrastinate worker` (concurrency 4, its defaults otherwise:
LISTEN/NOTIFY wake-ups, jobs kept after they finish), jobs deferred through
procrastinate's Python API.

    python peer.py queue JOBS CONCURRENCY RUN   # throughput: one JSON line
    python peer.py latency JOBS RATE            # enqueue-to-start: one JSON line

Each mode applies procrastinate's schema to the empty database named by
BENCH_PG_DSN (bench/run.sh creates it fresh), starts the worker as a child
process, waits until it listens, measures, stops it (SIGTERM, as an
operator would) and prints its figures on stdout.

- queue: JOBS deferrals, CONCURRENCY in flight; rate = JOBS / (first
  deferral, this process's clock → the last `succeeded` event's timestamp,
  the database's clock; one host, one clock).
- latency: JOBS deferrals at RATE a second (each on time, however long the
  one before took); per job `started` − `deferred` from procrastinate's own
  `procrastinate_events` table (both the database's `now()` of the
  transaction that wrote them).

The worker logs at `--log-level warning` (opsdeck runs with
RUST_LOG=warn): procrastinate's default INFO writes two lines per job.
"""

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time

import psycopg

from noop_app import app, noop

DSN = os.environ.get("BENCH_PG_DSN", "")


def die(message: str) -> None:
    print(f"procrastinate peer: {message}", file=sys.stderr)
    sys.exit(1)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank, as the load generator's `stats::percentile_sorted`."""
    rank = min(max(math.ceil(q * len(sorted_values)), 1), len(sorted_values))
    return sorted_values[rank - 1]


def apply_schema() -> None:
    subprocess.run(
        [sys.executable, "-m", "procrastinate", "--app=noop_app.app", "schema", "--apply"],
        check=True,
        stdout=subprocess.DEVNULL,
        env=worker_env(),
    )


def worker_env() -> dict:
    env = dict(os.environ)
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    return env


async def start_worker(db: psycopg.AsyncConnection, log) -> subprocess.Popen:
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "procrastinate", "--app=noop_app.app", "--log-level", "warning",
            "worker", "--concurrency", "4",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=worker_env(),
    )
    # Ready when its listening connection has run LISTEN: a job deferred
    # before that would wait for the worker's 5 s poll.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            die(f"the worker exited with {worker.returncode} (see {log.name})")
        cur = await db.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query ILIKE 'LISTEN %'"
        )
        if (await cur.fetchone())[0] > 0:
            return worker
        await asyncio.sleep(0.05)
    worker.kill()
    die("the worker did not listen within 30 s")


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def wait_done(db: psycopg.AsyncConnection, ids: list[int]) -> None:
    """Until none of the jobs is to do or doing; then every one succeeded."""
    deadline = time.monotonic() + 1200
    while True:
        cur = await db.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE id = ANY(%s) AND status IN ('todo', 'doing')",
            (ids,),
        )
        if (await cur.fetchone())[0] == 0:
            break
        if time.monotonic() > deadline:
            die("jobs still to do after 20 minutes")
        await asyncio.sleep(0.02)
    cur = await db.execute(
        "SELECT count(*) FROM procrastinate_jobs WHERE id = ANY(%s) AND status = 'succeeded'", (ids,)
    )
    succeeded = (await cur.fetchone())[0]
    if succeeded != len(ids):
        die(f"{succeeded} of {len(ids)} jobs succeeded")


async def queue(jobs: int, concurrency: int) -> dict:
    ids: list[int] = []
    remaining = iter(range(jobs))

    async def defer_some() -> None:
        # N.B.: one shared iterator: each of the `concurrency` loops takes
        # the next deferral when its own returns, so `concurrency` are in
        # flight until the end (as the load generator's buffer_unordered).
        for _ in remaining:
            ids.append(await noop.defer_async())

    first = time.time()
    t0 = time.monotonic()
    await asyncio.gather(*(defer_some() for _ in range(concurrency)))
    enqueue_s = time.monotonic() - t0
    return {"first": first, "ids": ids, "enqueue_s": enqueue_s}


async def latency(jobs: int, rate: float) -> dict:
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending = []
    for i in range(jobs):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(noop.defer_async()))
    ids = await asyncio.gather(*pending)
    return {"ids": list(ids), "launch_s": loop.time() - start}


async def main() -> None:
    if not DSN:
        die("BENCH_PG_DSN is not set")
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode not in ("queue", "latency") or len(sys.argv) != (5 if mode == "queue" else 4):
        die("usage: peer.py queue JOBS CONCURRENCY RUN | peer.py latency JOBS RATE")
    apply_schema()
    log_path = os.environ.get("BENCH_PEER_LOG", os.devnull)
    with open(log_path, "ab") as log:
        db = await psycopg.AsyncConnection.connect(DSN, autocommit=True)
        worker = await start_worker(db, log)
        try:
            async with app.open_async():
                if mode == "queue":
                    jobs, concurrency, run = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
                    got = await queue(jobs, concurrency)
                else:
                    jobs, rate = int(sys.argv[2]), float(sys.argv[3])
                    got = await latency(jobs, rate)
            await wait_done(db, got["ids"])
        finally:
            stop_worker(worker)
        if mode == "queue":
            cur = await db.execute(
                "SELECT extract(epoch FROM max(at))::float8 FROM procrastinate_events"
                " WHERE job_id = ANY(%s) AND type = 'succeeded'",
                (got["ids"],),
            )
            last = (await cur.fetchone())[0]
            secs = last - got["first"]
            result = {
                "bench": "pg-queue", "system": "procrastinate", "replicas": 1, "run": run,
                "jobs": jobs, "concurrency": concurrency, "worker_concurrency": 4,
                "enqueue_s": got["enqueue_s"], "first_enqueue_to_last_finished_s": secs,
                "jobs_per_s": jobs / secs, "succeeded": jobs,
            }
            print(f"procrastinate queue run {run}: {jobs} jobs in {secs:.3f} s = {jobs / secs:.0f} jobs/s",
                  file=sys.stderr)
        else:
            cur = await db.execute(
                "SELECT extract(epoch FROM s.at - d.at)::float8 * 1000"
                " FROM procrastinate_events d JOIN procrastinate_events s"
                "   ON s.job_id = d.job_id AND s.type = 'started'"
                " WHERE d.type = 'deferred' AND d.job_id = ANY(%s)",
                (got["ids"],),
            )
            ms = sorted(r[0] for r in await cur.fetchall())
            if len(ms) != jobs:
                die(f"{len(ms)} of {jobs} jobs have both a deferred and a started event")
            result = {
                "bench": "pg-latency", "system": "procrastinate", "replicas": 1, "jobs": jobs,
                "rate": rate, "launch_s": got["launch_s"], "p50_ms": percentile(ms, 0.50),
                "p99_ms": percentile(ms, 0.99), "max_ms": ms[-1], "mean_ms": sum(ms) / len(ms),
            }
            print(f"procrastinate latency: deferred → started p50 {result['p50_ms']:.2f} ms, "
                  f"p99 {result['p99_ms']:.2f} ms", file=sys.stderr)
        await db.close()
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
