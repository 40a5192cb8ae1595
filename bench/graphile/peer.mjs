// The graphile-worker peer of `bench/run.sh pg`: a task that does nothing,
// run by graphile-worker's `run()` with concurrency 4 and its default
// (unbatched) settings otherwise: no local queue, each job completed by its
// own statement, LISTEN/NOTIFY wake-ups. Jobs are added with `addJob`.
//
//   node peer.mjs queue JOBS CONCURRENCY RUN   # throughput: one JSON line
//   node peer.mjs latency JOBS RATE            # enqueue-to-start: one JSON line
//
// Each mode starts the worker as a child process (`node peer.mjs worker`,
// which installs graphile-worker's schema in the empty database named by
// BENCH_PG_DSN: bench/run.sh creates it fresh), waits until it runs,
// measures, stops it (SIGTERM) and prints its figures on stdout.
//
// - queue: JOBS `addJob` calls, CONCURRENCY in flight; rate = JOBS / (first
//   addJob, this process's clock → the worker's last `job:complete`, its
//   clock; one host, one clock). graphile-worker deletes a finished job, so
//   no database timestamp of the finish is left to read.
// - latency: JOBS `addJob` calls at RATE a second (each on time, however
//   long the one before took); per job the task's start (the worker's
//   clock) − the job's `created_at` (the database's `now()` at insert, read
//   by node-postgres as a Date: whole milliseconds, so a figure may read up
//   to 1 ms high).

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { openSync } from "node:fs";
import graphile from "graphile-worker";
import pg from "pg";

const { run, makeWorkerUtils, Logger } = graphile;
const DSN = process.env.BENCH_PG_DSN;
const nowMs = () => performance.timeOrigin + performance.now();

function die(message) {
  console.error(`graphile-worker peer: ${message}`);
  process.exit(1);
}

// Warnings and errors only: graphile-worker's default logger writes a line
// per job, which opsdeck (RUST_LOG=warn) and procrastinate (warning) do not.
const quiet = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`graphile-worker ${level}: ${message}`);
});

/** The worker child: reports its samples on SIGTERM. */
async function worker() {
  const samples = [];
  let succeeded = 0;
  let lastCompleteMs = null;
  const runner = await run({
    connectionString: DSN,
    concurrency: 4,
    noHandleSignals: true,
    logger: quiet,
    taskList: {
      noop: async (_payload, helpers) => {
        samples.push(nowMs() - helpers.job.created_at.getTime());
      },
    },
  });
  runner.events.on("job:success", () => {
    succeeded += 1;
  });
  runner.events.on("job:complete", () => {
    lastCompleteMs = nowMs();
  });
  process.on("SIGTERM", async () => {
    await runner.stop();
    process.stdout.write(JSON.stringify({ succeeded, lastCompleteMs, samples }) + "\n", () =>
      process.exit(0),
    );
  });
  process.stdout.write("ready\n");
}

/** Starts the worker child; resolves once it runs, with a function that
 * stops it and resolves with its report. */
async function startWorker() {
  const log = openSync(process.env.BENCH_PEER_LOG || "/dev/null", "a");
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "worker"], {
    stdio: ["ignore", "pipe", log],
  });
  const lines = [];
  const closed = new Promise((resolve) => {
    const reader = createInterface({ input: child.stdout });
    reader.on("line", (line) => lines.push(line));
    reader.on("close", resolve);
  });
  // N.B.: "close" (its stdout drained), not "exit", which may come before
  // the last line is read.
  const ready = await Promise.race([
    closed.then(() => false),
    new Promise((resolve) => {
      const check = setInterval(() => {
        if (lines.length) {
          clearInterval(check);
          resolve(true);
        }
      }, 10);
      closed.then(() => clearInterval(check));
    }),
  ]);
  if (!ready || lines[0] !== "ready") {
    throw new Error(`the worker did not start (exit code ${child.exitCode}; see BENCH_PEER_LOG)`);
  }
  return {
    child,
    stop: async () => {
      child.kill("SIGTERM");
      await closed;
      if (lines.length < 2) throw new Error(`the worker stopped without a report (exit code ${child.exitCode})`);
      return JSON.parse(lines[lines.length - 1]);
    },
  };
}

function percentile(sorted, q) {
  const rank = Math.min(Math.max(Math.ceil(q * sorted.length), 1), sorted.length);
  return sorted[rank - 1];
}

/** Until no job is left in graphile-worker's table (finished jobs are
 * deleted; a failed one would stay and end this after 20 minutes). */
async function waitEmpty(pool) {
  const deadline = Date.now() + 1_200_000;
  for (;;) {
    const { rows } = await pool.query("SELECT count(*)::int AS n FROM graphile_worker._private_jobs");
    if (rows[0].n === 0) return;
    if (Date.now() > deadline) throw new Error("jobs still queued after 20 minutes");
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function main() {
  const [mode, ...args] = process.argv.slice(2);
  if (mode === "worker") return worker();
  if (!DSN) die("BENCH_PG_DSN is not set");
  if (!((mode === "queue" && args.length === 3) || (mode === "latency" && args.length === 2))) {
    die("usage: peer.mjs queue JOBS CONCURRENCY RUN | peer.mjs latency JOBS RATE");
  }
  const jobs = Number(args[0]);
  const w = await startWorker();
  // One connection per addJob in flight (node-postgres' default pool has 10).
  const concurrency = mode === "queue" ? Number(args[1]) : 16;
  const pool = new pg.Pool({ connectionString: DSN, max: concurrency });
  // An idle client's error (the server going away) ends the run with it.
  pool.on("error", (e) => die(`the database connection failed: ${e.message}`));
  pool.on("connect", (client) => client.on("error", (e) => die(`the database connection failed: ${e.message}`)));
  const utils = await makeWorkerUtils({ pgPool: pool, logger: quiet });
  let result;
  try {
    if (mode === "queue") {
      const run = Number(args[2]);
      const first = nowMs();
      let left = jobs;
      // N.B.: `concurrency` loops each take the next job when their own
      // addJob returns, so that many are in flight until the end.
      const one = async () => {
        while (left > 0) {
          left -= 1;
          await utils.addJob("noop", {});
        }
      };
      await Promise.all(Array.from({ length: concurrency }, one));
      const enqueueS = (nowMs() - first) / 1000;
      await waitEmpty(pool);
      const report = await w.stop();
      if (report.succeeded !== jobs) throw new Error(`${report.succeeded} of ${jobs} jobs succeeded`);
      const secs = (report.lastCompleteMs - first) / 1000;
      result = {
        bench: "pg-queue", system: "graphile-worker", replicas: 1, run, jobs, concurrency,
        worker_concurrency: 4, enqueue_s: enqueueS, first_enqueue_to_last_finished_s: secs,
        jobs_per_s: jobs / secs, succeeded: report.succeeded,
      };
      console.error(`graphile-worker queue run ${run}: ${jobs} jobs in ${secs.toFixed(3)} s = ${(jobs / secs).toFixed(0)} jobs/s`);
    } else {
      const rate = Number(args[1]);
      const start = nowMs();
      const pending = [];
      for (let i = 0; i < jobs; i++) {
        const delay = start + (i * 1000) / rate - nowMs();
        if (delay > 0) await new Promise((r) => setTimeout(r, delay));
        pending.push(utils.addJob("noop", {}));
      }
      await Promise.all(pending);
      const launchS = (nowMs() - start) / 1000;
      await waitEmpty(pool);
      const report = await w.stop();
      if (report.succeeded !== jobs) throw new Error(`${report.succeeded} of ${jobs} jobs succeeded`);
      const ms = report.samples.sort((a, b) => a - b);
      result = {
        bench: "pg-latency", system: "graphile-worker", replicas: 1, jobs, rate, launch_s: launchS,
        p50_ms: percentile(ms, 0.5), p99_ms: percentile(ms, 0.99), max_ms: ms[ms.length - 1],
        mean_ms: ms.reduce((a, b) => a + b, 0) / ms.length,
      };
      console.error(`graphile-worker latency: created → started p50 ${result.p50_ms.toFixed(2)} ms, p99 ${result.p99_ms.toFixed(2)} ms`);
    }
  } finally {
    w.child.kill("SIGKILL");
    await utils.release();
    await pool.end();
  }
  console.log(JSON.stringify(result));
}

main().catch((e) => die(e.stack || String(e)));
