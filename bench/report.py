#!/usr/bin/env python3
"""Tables of the benchmark results (bench/run.sh calls this at the end).

Reads bench/results/*.jsonl (one JSON object per line, written by
bench/run.sh and the load generator), prints the tables and writes them to
bench/results/summary.md. Engine figures are medians of the runs.
"""

import json
import statistics
import sys
from pathlib import Path


def load(results: Path, name: str) -> list[dict]:
    path = results / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rows_of(items: list[dict], bench: str) -> list[dict]:
    return [r for r in items if r.get("bench") == bench]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float) and digits == 0:
        return f"{round(v):,}{unit}"
    if isinstance(v, int):
        return f"{v:,}{unit}"
    return f"{v:,.{digits}f}{unit}"


def verdict(ok):
    return "–" if ok is None else ("met" if ok else "**missed**")


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def disturbance(items: list[dict]) -> str:
    d = rows_of(items, "disturbance")
    if d and d[-1].get("busy_seconds", 0) > 0:
        return f"\n\n⚠ a compiler ran for {d[-1]['busy_seconds']} s during this benchmark: figures suspect."
    return ""


def ingest(results: Path) -> str:
    items = load(results, "ingest")
    ops = rows_of(items, "ingest")
    if not ops:
        return ""
    dev = rows_of(items, "ingest-devnull")
    sql = rows_of(items, "ingest-sqlite3")
    n = ops[0]["lines"]
    ops_s = median([r["claim_to_finish_s"] for r in ops])
    rate = median([r["lines_per_s"] for r in ops])
    dev_s = median([r["secs"] for r in dev])
    sql_s = median([r["secs"] for r in sql])
    peak_mib = [r["peak_rss_kib"] / 1024 for r in ops]
    ratio = ops_s / sql_s if sql_s else None
    runs = len(ops)
    rows = [
        ["opsdeck: claim → finished, every line committed", fmt(ops_s, 3, " s"), fmt(rate, 0),
         f"≥ 300,000 lines/s: {verdict(rate >= 300_000)}"],
        ["the same awk to /dev/null", fmt(dev_s, 3, " s"), fmt(n / dev_s if dev_s else None), ""],
        ["sqlite3 `.import` of the same lines, one transaction", fmt(sql_s, 3, " s"),
         fmt(n / sql_s if sql_s else None),
         f"opsdeck within 2× of it: {fmt(ratio, 2)}× → {verdict(ratio is not None and ratio <= 2)}"],
        ["opsdeck peak RSS (max of runs; median)", f"{max(peak_mib):.1f} MiB; {median(peak_mib):.1f} MiB", "",
         f"< 100 MiB: {verdict(max(peak_mib) < 100)}"],
    ]
    per_run = ", ".join(f"{r['lines_per_s']:,.0f}" for r in ops)
    return (
        f"### Ingest: {n:,} lines of 80 bytes (median of {runs} runs)\n\n"
        + table(["what", "time", "lines/s", "target"], rows)
        + f"\n\nopsdeck runs (lines/s): {per_run}. last_seq = {ops[0]['last_seq']:,} "
        "(the lines + opsdeck's two system lines), checked in the database."
        + disturbance(items)
    )


def queue(results: Path) -> str:
    items = load(results, "queue")
    ops = rows_of(items, "queue")
    if not ops:
        return ""
    shell = rows_of(items, "queue-shell")
    n = ops[0]["jobs"]
    rate = median([r["jobs_per_s"] for r in ops])
    secs = median([r["first_enqueue_to_last_finished_s"] for r in ops])
    shell_s = median([r["secs"] for r in shell])
    shell_rate = n / shell_s if shell_s else None
    ok = shell_rate is not None and rate >= shell_rate / 2
    rows = [
        [f"opsdeck: {n:,} jobs `true`, 4 workers, 16 enqueues in flight (first enqueue → last finished)",
         fmt(secs, 2, " s"), fmt(rate), f"≥ half the shell loop's: {verdict(ok)} ({fmt(rate / shell_rate if shell_rate else None, 2)}×)"],
        [f"shell loop spawning /bin/true {n:,} times", fmt(shell_s, 2, " s"), fmt(shell_rate), ""],
    ]
    per_run = ", ".join(f"{r['jobs_per_s']:,.0f}" for r in ops)
    return (
        f"### Queue (median of {len(ops)} runs)\n\n"
        + table(["what", "time", "jobs/s", "target"], rows)
        + f"\n\nopsdeck runs (jobs/s): {per_run}."
        + disturbance(items)
    )


def fanout(results: Path) -> str:
    items = load(results, "fanout")
    steps = rows_of(items, "fanout")
    if not steps:
        return ""
    summaries = rows_of(items, "fanout-summary")
    rows = []
    for s in summaries:
        best = s.get("best_rate")
        target = ""
        if s["system"] == "opsdeck" and s["subs"] == 1000:
            target = f"≥ 1,000 lines/s to 1,000: {verdict(best is not None and best >= 1000)}"
        rows.append([s["system"], fmt(s["subs"]), fmt(best, 0, " lines/s") if best else "none passed",
                     fmt(s.get("lowest_failed_rate_above")), target])
    detail = []
    for r in steps:
        detail.append([
            r["system"], fmt(r["subs"]), fmt(r["rate"]), "pass" if r["pass"] else "fail",
            f"{r['subs_complete']}/{r['subs']}", fmt(r["p50_ms"], 1), fmt(r["p99_ms"], 1), fmt(r["max_ms"], 1),
            fmt(r["delivered_lines_per_s"]), fmt(r["client_cpu_pct"], 0, " %"),
            fmt(r.get("server_cpu_pct"), 0, " %"), "; ".join(r["why"]) or "",
        ])
    secs = steps[0]["secs"]
    return (
        f"### Fan-out ({secs} s per rate; server or nginx worker on core 0, load generator on core 1)\n\n"
        + table(["system", "subscribers", "highest rate meeting the criteria", "lowest failing rate above", "target"], rows)
        + "\n\nEvery rate tried:\n\n"
        + table(["system", "subs", "lines/s", "result", "complete subs", "p50 ms", "p99 ms", "max ms",
                 "delivered events/s", "client CPU", "server CPU", "why it failed"], detail)
        + disturbance(items)
    )


def resume(results: Path) -> str:
    items = load(results, "resume")
    r = rows_of(items, "resume")
    if not r:
        return ""
    r = r[-1]
    rows = [["opsdeck", fmt(r["tries"]), fmt(r["min_ms"], 2), fmt(r["p50_ms"], 2), fmt(r["p99_ms"], 2),
             fmt(r["max_ms"], 2), f"≤ 20 ms: {verdict(r['p99_ms'] <= 20)} (p99)"]]
    return (
        f"### Resume: first `log` event after `Last-Event-ID: {r['last_event_id']}` on a finished "
        f"{r['job_last_seq']:,}-line job (new connection each try)\n\n"
        + table(["system", "tries", "min ms", "median ms", "p99 ms", "max ms", "target"], rows)
        + disturbance(items)
    )


def idle(results: Path) -> str:
    items = load(results, "idle")
    r = rows_of(items, "idle")
    if not r:
        return ""
    rows = []
    for x in r:
        target = f"≤ 16 KiB: {verdict(x['bytes_per_stream'] <= 16 * 1024)}" if x["system"] == "opsdeck" else ""
        rows.append([x["system"], fmt(x["streams"]), fmt(x.get("counted_by_server")),
                     fmt(x["rss_before_kib"] / 1024, 1, " MiB"), fmt(x["rss_after_kib"] / 1024, 1, " MiB"),
                     fmt(x["bytes_per_stream"] / 1024, 1, " KiB"), target])
    return (
        "### Idle streams: server memory per open stream\n\n"
        + table(["system", "streams", "counted by the server", "RSS before", "RSS with streams", "per stream", "target"], rows)
        + disturbance(items)
    )


def term(results: Path) -> str:
    items = load(results, "term")
    tp = rows_of(items, "term-throughput")
    echo = rows_of(items, "term-echo")
    if not tp:
        return ""
    pty = median([r["mb_per_s"] for r in tp if r["system"] == "pty"])
    rows = []
    for system in ("pty", "opsdeck", "terminado", "wetty"):
        t = [r for r in tp if r["system"] == system]
        e = [r for r in echo if r["system"] == system]
        if not t and not e:
            continue
        mbps = median([r["mb_per_s"] for r in t])
        share = mbps / pty if (mbps is not None and pty) else None
        p50 = median([r["p50_ms"] for r in e])
        p99 = median([r["p99_ms"] for r in e])
        target = ""
        if system == "opsdeck":
            target = (f"≥ 90 % of the PTY: {verdict(share is not None and share >= 0.9)}; "
                      f"echo p99 ≤ 1 ms: {verdict(p99 is not None and p99 <= 1.0)}")
        rows.append([
            "the PTY alone" if system == "pty" else system,
            fmt(mbps, 1, " MB/s"),
            "–" if share is None else f"{share * 100:.0f} %",
            fmt(median([r.get("client_cpu_secs") for r in t]), 2, " s"),
            fmt(p50, 3, " ms") if e else "–",
            fmt(p99, 3, " ms") if e else "–",
            target,
        ])
    bytes_ = tp[0]["bytes"]
    return (
        f"### Terminal: `seq 1 3000000` ({bytes_ / 1e6:.1f} MB through the PTY) and keystroke echo "
        f"(`stty raw -echo; exec cat`), medians of {len([r for r in tp if r['system'] == 'pty'])} runs\n\n"
        + table(["system", "throughput", "of the PTY", "client CPU", "echo p50", "echo p99", "target"], rows)
        + disturbance(items)
    )


def agent(results: Path) -> str:
    items = load(results, "agent")
    local = rows_of(items, "agent-ingest-local")
    remote = rows_of(items, "agent-ingest-agent")
    if not local and not remote:
        return ""
    local_rate = median([r["lines_per_s"] for r in local])
    agent_rate = median([r["lines_per_s"] for r in remote])
    share = agent_rate / local_rate if local_rate and agent_rate else None
    rows = [
        ["the ingest job run locally (claim → finished, every line committed)", fmt(local_rate), ""],
        ["the same job on an agent on this host (dispatch → every line committed, finished)", fmt(agent_rate),
         f"≥ 80 % of local: {fmt(share * 100 if share else None, 0, ' %')} → {verdict(share is not None and share >= 0.8)}"],
    ]
    out = (f"### Agents (median of {len(remote)} runs each)\n\n"
           + table(["what", "lines/s", "target"], rows))
    rec = rows_of(items, "agent-reconnect")
    can = rows_of(items, "agent-cancel")
    lat = []
    if rec:
        r = rec[-1]
        lat.append([f"network back → first resent line at a subscriber ({r['samples']} cuts of 0.3–1.5 s)",
                    fmt(r["p50_ms"], 0, " ms"), fmt(r["p99_ms"], 0, " ms"), fmt(r["max_ms"], 0, " ms"),
                    f"p99 ≤ 1 s: {verdict(r['p99_ms'] <= 1000)}"])
    if can:
        r = can[-1]
        lat.append([f"cancel → process group gone, job cancelled ({r['samples']} cancels of `sleep`)",
                    fmt(r["p50_ms"], 0, " ms"), fmt(r["p99_ms"], 0, " ms"), fmt(r["max_ms"], 0, " ms"),
                    f"p99 ≤ 1 s + the grace: {verdict(r['p99_ms'] <= 1000)}"])
    if lat:
        out += "\n\n" + table(["what", "p50", "p99", "max", "target"], lat)
    return out + disturbance(items)


def pg(results: Path) -> str:
    items = load(results, "pg")
    queues = rows_of(items, "pg-queue")
    cpus = rows_of(items, "pg-cpu")
    lats = rows_of(items, "pg-latency")
    ingests = rows_of(items, "pg-ingest")
    if not queues and not lats and not ingests:
        return ""
    parts = []
    versions = rows_of(items, "pg-versions")
    if versions:
        v = versions[-1]
        parts.append(
            f"PostgreSQL {v['postgresql']}; procrastinate {v['procrastinate']} (psycopg {v['psycopg']}, "
            f"Python {v['python']}); graphile-worker {v['graphile-worker']} (pg {v['pg']}, Node {v['node']})."
        )
    systems = [("opsdeck", 1), ("opsdeck", 2), ("procrastinate", 1), ("graphile-worker", 1)]

    def label(system, replicas):
        if system == "opsdeck":
            return f"opsdeck, {replicas} replica{'s' if replicas > 1 else ''} × 4 workers"
        return f"{system}, concurrency 4"

    if queues:
        rate = {k: median([r["jobs_per_s"] for r in queues if (r["system"], r["replicas"]) == k]) for k in systems}
        proc, gw = rate[("procrastinate", 1)], rate[("graphile-worker", 1)]
        rows = []
        for k in systems:
            runs = [r for r in queues if (r["system"], r["replicas"]) == k]
            if not runs:
                continue
            target = ""
            if k[0] == "opsdeck" and rate[k] is not None:
                x_proc = rate[k] / proc if proc else None
                x_gw = rate[k] / gw if gw else None
                target = (f"≥ 3× procrastinate: {fmt(x_proc, 2)}× → {verdict(x_proc is not None and x_proc >= 3)}; "
                          f"≥ graphile-worker: {fmt(x_gw, 2)}× → {verdict(x_gw is not None and x_gw >= 1)}")
            cpu = [c["cpu_s"] / c["jobs"] * 1000 for c in cpus if (c["system"], c["replicas"]) == k]
            rows.append([label(*k), fmt(median([r["first_enqueue_to_last_finished_s"] for r in runs]), 2, " s"),
                         fmt(rate[k]), ", ".join(f"{r['jobs_per_s']:,.0f}" for r in runs),
                         fmt(median(cpu), 2, " ms") if cpu else "–", target])
        n = queues[0]["jobs"]
        parts.append(
            f"### Queue on PostgreSQL: {n:,} no-op jobs, 16 enqueues in flight while the workers run "
            f"(first enqueue → last finished; median of {len({r['run'] for r in queues})} runs)\n\n"
            "CPU per job: the CPU time the whole machine used during the run (every process: the "
            "system's own, its clients and PostgreSQL; from /proc/stat), divided by the jobs.\n\n"
            + table(["system", "time", "jobs/s", "runs (jobs/s)", "CPU per job", "target"], rows)
        )
    if lats:
        rows = []
        for k in systems:
            r = [x for x in lats if (x["system"], x["replicas"]) == k]
            if not r:
                continue
            r = r[-1]
            target = ""
            if k[0] == "opsdeck":
                target = (f"p50 ≤ 10 ms: {verdict(r['p50_ms'] <= 10)}; "
                          f"p99 ≤ 50 ms: {verdict(r['p99_ms'] <= 50)}")
            rows.append([label(*k), fmt(r["p50_ms"], 1, " ms"), fmt(r["p99_ms"], 1, " ms"),
                         fmt(r["max_ms"], 1, " ms"), target])
        x = lats[0]
        parts.append(
            f"### Enqueue-to-start latency on PostgreSQL: {x['jobs']:,} no-op jobs at {x['rate']:g}/s\n\n"
            + table(["system", "p50", "p99", "max", "target"], rows)
        )
    if ingests:
        copies = rows_of(items, "pg-ingest-copy")
        n = ingests[0]["lines"]
        ops_s = median([r["claim_to_finish_s"] for r in ingests])
        copy_s = median([r["secs"] for r in copies])
        ratio = ops_s / copy_s if copy_s else None
        peak_mib = [r["peak_rss_kib"] / 1024 for r in ingests]
        rows = [
            ["opsdeck on PostgreSQL: claim → finished, every line committed", fmt(ops_s, 3, " s"),
             fmt(median([r["lines_per_s"] for r in ingests])), ""],
            ["psql `\\copy` of the same lines into a table shaped as job_logs", fmt(copy_s, 3, " s"),
             fmt(n / copy_s if copy_s else None),
             f"opsdeck within 2× of it: {fmt(ratio, 2)}× → {verdict(ratio is not None and ratio <= 2)}"],
            ["opsdeck peak RSS (max of runs; median)", f"{max(peak_mib):.1f} MiB; {median(peak_mib):.1f} MiB", "", ""],
        ]
        parts.append(
            f"### Ingest on PostgreSQL: {n:,} lines of 80 bytes (median of {len(ingests)} runs)\n\n"
            + table(["what", "time", "lines/s", "target"], rows)
            + "\n\nopsdeck runs (lines/s): " + ", ".join(f"{r['lines_per_s']:,.0f}" for r in ingests) + "."
        )
    recoveries = rows_of(items, "pg-recovery")
    if recoveries:
        secs = [r["secs"] for r in recoveries]
        rows = [["SIGKILL of the replica running a job → the job `failed` on the other replica",
                 fmt(median(secs), 1, " s"), fmt(max(secs), 1, " s"),
                 ", ".join(f"{s:.1f}" for s in secs),
                 f"≤ 15 s: {verdict(max(secs) <= 15)}"]]
        parts.append(
            f"### Dead-replica recovery: two replicas, `node_timeout` {recoveries[0]['node_timeout_s']} s "
            f"(the default), {len(secs)} kills\n\n"
            + table(["what", "median", "max", "runs (s)", "target"], rows)
        )
    return "\n\n".join(parts) + disturbance(items)


def web(results: Path) -> str:
    items = load(results, "web")
    first = rows_of(items, "web-first")
    lazy = rows_of(items, "web-lazy")
    if not first:
        return ""
    pages = list(dict.fromkeys(r["page"] for r in first))
    rows = []
    for page in pages:
        runs = [r for r in first if r["page"] == page]
        total = median([r["bytes"] for r in runs])
        hydrated = median([r["hydrated_ms"] for r in runs])
        target = ""
        if page == "dashboard":
            target = (f"≤ 350 KB: {verdict(total <= 350_000)}; "
                      f"hydrated ≤ 3 s: {verdict(hydrated <= 3000)}")
        rows.append([page, f"`{runs[0]['path']}`", fmt(total, 0, " B"), fmt(hydrated, 0, " ms"), target])
    out = (f"### A first visit: every page cold, as admin, Chromium throttled to 1.6 Mbit/s down, "
           f"150 ms RTT (median of {len([r for r in first if r['page'] == pages[0]])} runs)\n\n"
           + table(["page", "path", "transferred (all files, compressed)", "hydrated after", "target"], rows))
    # The files of the dashboard's median run, largest first.
    dash = sorted((r for r in first if r["page"] == pages[0]), key=lambda r: r["bytes"])
    if dash:
        files = dash[len(dash) // 2]["files"]
        out += (f"\n\nWhat the {pages[0]}'s first load transferred, by file (the median run):\n\n"
                + table(["file", "transferred"],
                        [[f"`{k}`", fmt(v, 0, " B")] for k, v in sorted(files.items(), key=lambda kv: -kv[1])]))
    if lazy:
        out += ("\n\nOpening each page from the hydrated dashboard (a link the router follows): the site's "
                "files it fetched on top (data requests and files served from the browser's cache not counted)\n\n"
                + table(["page", "site files fetched", "transferred"],
                        [[r["page"], ", ".join(f"`{k}` ({v:,} B)" for k, v in sorted(r["files"].items())
                                               if v > 0 and not k.endswith("(document/data)")) or "none",
                          fmt(r["bytes"], 0, " B")] for r in lazy]))
    site = rows_of(items, "web-site")
    if site:
        files = site[-1]["files"]
        pkg = {k: v for k, v in files.items() if k.startswith("pkg/")}
        out += (f"\n\nThe built site: {len(files)} files, {sum(files.values()):,} B; under `pkg/`: "
                + ", ".join(f"`{k}` {v:,} B" for k, v in sorted(pkg.items(), key=lambda kv: -kv[1])))
    return out + disturbance(items)


def main() -> None:
    results = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results")
    parts = []
    machine = results / "machine.json"
    if machine.exists():
        m = json.loads(machine.read_text())
        parts.append(
            f"Machine: {m['cores']} cores ({m['cpu']}), {m['mem_gib']} GiB, {m['os']}, kernel {m['kernel']}; "
            f"{m['opsdeck']} at {m['commit']} ({m['uncommitted_files']} files uncommitted), "
            f"{m['nginx']}, sqlite3 {m['sqlite3']}; {m['date']}."
        )
    for section in (ingest, queue, fanout, resume, idle, term, agent, pg, web):
        text = section(results)
        if text:
            parts.append(text)
    out = "\n\n".join(parts) + "\n"
    (results / "summary.md").write_text(out)
    print(out)


if __name__ == "__main__":
    main()
