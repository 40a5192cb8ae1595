#!/usr/bin/env bash
# `make bench`: opsdeck's benchmarks of the job engine and the live streams,
# each beside its baseline or peer, on this machine.
#
#   bench/run.sh                 every benchmark (about 20-30 minutes)
#   bench/run.sh ingest queue    only these (ingest queue fanout resume idle term agent pg web)
#   bench/run.sh report          print the tables of the last results again
#
# Set-up (skipped when done): nginx + nchan from Debian, the release server
# binary and the load generator (server/benches/loadgen); for `pg`, a venv
# with procrastinate (PyPI) in $BENCH_WORK/venv and graphile-worker (npm,
# `npm ci` of bench/graphile/package-lock.json); for `web`, the release
# site (`cargo leptos build --release`, as `make dist` builds it) carried
# by the binary, and Playwright from end2end/ (`make setup`). Results: one JSON
# object per line in bench/results/NAME.jsonl, tables in
# bench/results/summary.md. Scratch files (databases, configs, logs) live
# in $BENCH_WORK (default /tmp/opsdeck-bench).
#
# Knobs: BENCH_PORT (18080) the port of opsdeck's server, BENCH_FANOUT_SECS (30) seconds per fan-out rate, BENCH_RUNS (3)
# runs of the engine benchmarks, BENCH_QUEUE_JOBS (5000), BENCH_PG_JOBS
# (5000) jobs per queue run on PostgreSQL, BENCH_PG_PARTS ("queue latency
# ingest recovery") which parts of the pg benchmark run, BENCH_IDLE_STREAMS (10000),
# BENCH_MAX_WAIT (1800) seconds to wait for a quiet machine.
#
# `pg` needs the machine's PostgreSQL on 127.0.0.1:5432 (user postgres,
# trust; .ci/run starts it) and creates and drops its own databases there
# (opsdeck_bench_pg, opsdeck_bench_procrastinate, opsdeck_bench_graphile,
# opsdeck_bench_copy).
#
# Each benchmark starts its own fresh server (and database) and stops it.
# The engine benchmarks run the server unpinned (the job's own process
# needs a core too); the stream benchmarks pin the server (or nginx) to
# core 0 and the load generator to core 1. Before each benchmark the script
# waits while a compiler or a browser runs on the machine, and records
# whether one ran during it (the `web` benchmark's own Chromium, in this
# script's session, does not count).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/opsdeck/target}"
export LEPTOS_OUTPUT_NAME=opsdeck
WORK=${BENCH_WORK:-/tmp/opsdeck-bench}
RESULTS=$ROOT/bench/results
BIN=$WORK/bin
PORT=${BENCH_PORT:-18080} # opsdeck
NCHAN_PORT=18090 # nginx (fixed in bench/nchan/nginx.conf)
FANOUT_SECS=${BENCH_FANOUT_SECS:-30}
RUNS=${BENCH_RUNS:-3}
LINES=1000000
TERM_LINES=3000000
TERM_KEYS=${BENCH_TERM_KEYS:-2000}
TERMINADO_PORT=18100
WETTY_PORT=18110
QUEUE_JOBS=${BENCH_QUEUE_JOBS:-5000}
PG_JOBS=${BENCH_PG_JOBS:-5000}
PG_LATENCY_JOBS=500
PG_LATENCY_RATE=20
PG_URL=postgres://postgres@127.0.0.1:5432
# The peers' pinned versions (graphile-worker's is in bench/graphile/package.json).
PG_PY_PINS=("procrastinate==3.10.0" "psycopg[binary]==3.3.9")
IDLE_STREAMS=${BENCH_IDLE_STREAMS:-10000}
PASSWORD=bench-admin-password-not-a-secret
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
# CPU time every process of the machine has used so far, in seconds (user,
# nice, system, irq and softirq of all cores, from /proc/stat): the
# difference over a run is what the whole run cost, the database included.
busy_cpu() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8) / hz }' /proc/stat; }
# Appends to $1 the CPU a queue run used: system $2, replicas $3, run $4,
# jobs $5, busy_cpu before $6 and after $7.
queue_cpu() {
    echo "{\"bench\": \"pg-cpu\", \"system\": \"$2\", \"replicas\": $3, \"run\": $4, \"jobs\": $5, \"cpu_s\": $(elapsed "$6" "$7")}" >>"$1"
}

# ---- processes this script started (stopped on exit, by pid) -------------------

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
    local keep=() pid
    for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
    PIDS=("${keep[@]}")
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}

# ---- set-up ---------------------------------------------------------------------

setup() {
    if [ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || ! command -v nginx >/dev/null; then
        log "installing nginx and nchan (Debian packages)"
        $SUDO apt-get install -y -q nginx libnginx-mod-nchan ||
            { $SUDO apt-get update -q && $SUDO apt-get install -y -q nginx libnginx-mod-nchan; }
    fi
    command -v sqlite3 >/dev/null || $SUDO apt-get install -y -q sqlite3
    command -v python3 >/dev/null || die "python3 is needed (results and tables)"

    log "building the release server and the load generator"
    cd "$ROOT"
    # The server exactly as `cargo build --release -p server` builds it…
    cargo build --release -p server
    mkdir -p "$BIN"
    cp -f "$CARGO_TARGET_DIR/release/opsdeck" "$BIN/opsdeck.new"
    mv -f "$BIN/opsdeck.new" "$BIN/opsdeck"
    # …and the load generator (a bench target of the server crate).
    local exe
    exe=$(cargo build --release -p server --bench loadgen --message-format=json-render-diagnostics |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "loadgen" and m.get("executable"):
        print(m["executable"])')
    [ -x "$exe" ] || die "cannot find the loadgen executable"
    cp -f "$exe" "$BIN/loadgen.new"
    mv -f "$BIN/loadgen.new" "$BIN/loadgen"

    # 10,000 idle streams need file descriptors on both sides.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_STREAMS + 1000)) ]; then
        die "ulimit -n is $(ulimit -n) (hard limit $(ulimit -Hn)); the idle benchmark needs $((IDLE_STREAMS + 1000))"
    fi
    mkdir -p "$RESULTS"
    machine >"$RESULTS/machine.json"
}

machine() {
    python3 - "$(nproc)" "$(uname -r)" "$("${SERVER_EXE:-$BIN/opsdeck}" --version 2>/dev/null || echo '?')" \
        "$(nginx -v 2>&1 || echo 'nginx: not installed')" "$(sqlite3 --version | cut -d' ' -f1)" "$(git -C "$ROOT" rev-parse --short HEAD)" \
        "$(git -C "$ROOT" status --porcelain | wc -l)" <<'EOF'
import json, sys, datetime
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
os_name = next((l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release") if l.startswith("PRETTY_NAME")), "?")
print(json.dumps({
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "cores": int(sys.argv[1]), "cpu": cpu, "mem_gib": round(mem / 1024 / 1024, 1), "os": os_name,
    "kernel": sys.argv[2], "opsdeck": sys.argv[3], "nginx": sys.argv[4], "sqlite3": sys.argv[5],
    "commit": sys.argv[6], "uncommitted_files": int(sys.argv[7]),
}))
EOF
}

# ---- a quiet machine --------------------------------------------------------------

# Other heavy work on the machine (the lead may be compiling or running the
# browser tests) would skew every figure.
busy() {
    local name pid
    for name in rustc cc1 cc1plus; do
        pgrep -x "$name" >/dev/null && return 0
    done
    for name in chromium chrome headless_shell; do
        for pid in $(pgrep -x "$name"); do
            [ "$(ps -o sid= -p "$pid" | tr -d ' ')" = "$OWN_SID" ] || return 0
        done
    done
    return 1
}
OWN_SID=$(ps -o sid= -p $$ | tr -d ' ')

# Waits (up to BENCH_MAX_WAIT seconds, default 1800) while such work runs,
# then starts a watcher that notes every second it runs during a benchmark.
wait_quiet() {
    local waited=0 max=${BENCH_MAX_WAIT:-1800}
    while busy; do
        [ $waited = 0 ] && log "waiting for the compiler or browser tests to finish (the figures would be skewed)"
        if [ $waited -ge "$max" ]; then
            log "still busy after $max s: going ahead (the figures will be marked)"
            break
        fi
        sleep 5
        waited=$((waited + 5))
    done
    BENCH_T0=$(date +%s)
    : >"$WORK/busy.log"
    (while :; do
        busy && date +%s >>"$WORK/busy.log"
        sleep 1
    done) &
    WATCHER=$!
    PIDS+=("$WATCHER")
}

# Records whether other heavy work ran during the benchmark `$1`.
note_disturbance() {
    stop_pid "$WATCHER"
    local busy
    busy=$(wc -l <"$WORK/busy.log")
    echo "{\"bench\": \"disturbance\", \"name\": \"$1\", \"busy_seconds\": $busy, \"from\": $BENCH_T0, \"to\": $(date +%s)}" \
        >>"$RESULTS/$1.jsonl"
    [ "$busy" = 0 ] || log "warning: a compiler or browser ran during $busy s of the $1 benchmark; its figures are suspect"
}

# ---- opsdeck ----------------------------------------------------------------------

# Writes the configuration of a benchmark server for directory $1.
write_config() {
    local dir=$1
    cat >"$dir/opsdeck.toml" <<EOF
# Generated by bench/run.sh.
[server]
addr = "127.0.0.1:$PORT"
database_url = "sqlite://$dir/opsdeck.db"
workers = 4
# One load generator is thousands of viewers of one user on one address.
max_streams_per_user = 20000
max_streams_per_address = 20000

[[targets]]
id = "engine"
kind = "local"

[[targets]]
id = "fan"
kind = "local"

[[targets]]
id = "idle"
kind = "local"

# 1,000,000 lines of 80 bytes (79 characters and the newline); doubled braces are
# literal braces (not placeholders).
[[templates]]
id = "ingest"
command = ["awk", 'BEGIN {{ for (i = 1; i <= $LINES; i++) printf "%079d\n", i }}']
exclusive = "none"
max_log_bytes = "512MiB"
targets = ["engine"]

[[templates]]
id = "true"
command = ["true"]
exclusive = "none"
targets = ["engine"]

# Keeps the fan target busy while the subscribers connect to the queued emit job.
[[templates]]
id = "hold"
command = ["sleep", "600"]
targets = ["fan"]

[[templates]]
id = "emit"
command = ["$BIN/loadgen", "emit", "{rate}", "{secs}"]
params = [
  { name = "rate", type = "int", default = 1000, min = 1, max = 1000000 },
  { name = "secs", type = "int", default = 30, min = 1, max = 3600 },
]
max_log_bytes = "4GiB"
targets = ["fan"]

[terminal]
max_sessions_per_user = 1000

# The terminal benchmark's "shells": seq's output, and an echo of each key.
[[targets]]
id = "term-seq"
kind = "local"
terminal = true
shell = ["seq", "1", "$TERM_LINES"]

[[targets]]
id = "term-echo"
kind = "local"
terminal = true
shell = ["sh", "-c", "stty raw -echo; exec cat"]

[[templates]]
id = "silent"
command = ["sleep", "3600"]
exclusive = "none"
targets = ["idle"]

# The agent benchmarks: the same ingest job on an agent's target, a job
# printing 100 lines a second there, and one to cancel.
[[targets]]
id = "remote"
kind = "agent"
agent = "bench-agent"

[[templates]]
id = "ingest-agent"
command = ["awk", 'BEGIN {{ for (i = 1; i <= $LINES; i++) printf "%079d\n", i }}']
exclusive = "none"
max_log_bytes = "512MiB"
targets = ["remote"]

[[templates]]
id = "drip-agent"
command = ["$BIN/loadgen", "emit", "100", "3600"]
exclusive = "none"
max_log_bytes = "512MiB"
targets = ["remote"]

[[templates]]
id = "hold-agent"
command = ["sleep", "3600"]
exclusive = "none"
kill_grace = "10s"
targets = ["remote"]
EOF
}


# Starts `opsdeck serve` with the configuration $2 listening on port $3 (its
# log in directory $1), the rest of the arguments before it (e.g. taskset),
# and waits until it answers. Sets SERVER_PID.
serve_opsdeck() {
    local dir=$1 config=$2 port=$3
    shift 3
    curl -s -o /dev/null "http://127.0.0.1:$port/" && die "port $port is taken; stop whatever listens there"
    OPSDECK_ADMIN_PASSWORD=$PASSWORD RUST_LOG=warn "$@" "${SERVER_EXE:-$BIN/opsdeck}" --config "$config" serve \
        >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local i
    for i in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "opsdeck did not start: $(tail -5 "$dir/server.log")"
        sleep 0.1
    done
    curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" || die "opsdeck is not answering on port $port"
}

# Starts a fresh server (new database) in $WORK/$1; $2 = "pinned" puts it on
# core 0. Sets SERVER_PID, CONFIG and OPSDECK_TOKEN.
start_opsdeck() {
    local dir=$WORK/$1 pin=()
    [ "${2:-}" = pinned ] && pin=(taskset -c 0)
    rm -rf "$dir"
    mkdir -p "$dir"
    write_config "$dir"
    CONFIG=$dir/opsdeck.toml
    serve_opsdeck "$dir" "$CONFIG" "$PORT" "${pin[@]}"
    OPSDECK_TOKEN=$("${SERVER_EXE:-$BIN/opsdeck}" --config "$CONFIG" token create --user admin --label bench 2>/dev/null)
    export OPSDECK_TOKEN
}

stop_opsdeck() {
    stop_pid "$SERVER_PID"
}

loadgen() { "$BIN/loadgen" "$@"; }
# The load generator on core 1 (stream benchmarks).
loadgen_pinned() { taskset -c 1 "$BIN/loadgen" "$@"; }

api() { # METHOD PATH [JSON]
    curl -sf -X "$1" -H "Authorization: Bearer $OPSDECK_TOKEN" -H 'Content-Type: application/json' \
        ${3:+--data "$3"} "http://127.0.0.1:$PORT$2"
}
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# ---- nginx + nchan -------------------------------------------------------------------

start_nchan() {
    local prefix=$WORK/nchan
    rm -rf "$prefix"
    mkdir -p "$prefix/logs" "$prefix/tmp"
    curl -s -o /dev/null "http://127.0.0.1:$NCHAN_PORT/" && die "port $NCHAN_PORT is taken"
    taskset -c 0 nginx -p "$prefix/" -e "$prefix/logs/error.log" -c "$ROOT/bench/nchan/nginx.conf" \
        -g 'daemon off;' &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    local i
    for i in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$NCHAN_PORT/pub?id=probe" && break
        kill -0 "$NGINX_PID" 2>/dev/null || die "nginx did not start: $(tail -5 "$prefix/logs/error.log")"
        sleep 0.1
    done
    NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1)
    [ -n "$NGINX_WORKER" ] || die "no nginx worker process"
}

stop_nchan() {
    stop_pid "$NGINX_PID"
}

# ---- the benchmarks ------------------------------------------------------------------

bench_ingest() {
    local out=$RESULTS/ingest.jsonl data=$WORK/ingest-baseline
    : >"$out"
    mkdir -p "$data"
    local gen="BEGIN { for (i = 1; i <= $LINES; i++) printf \"%079d\\n\", i }"
    # The CSV sqlite3 imports: job_id, seq, stream, ts (ms), text.
    awk "BEGIN { for (i = 1; i <= $LINES; i++) printf \"1,%d,0,%d,%079d\\n\", i, 1763900000000 + i, i }" \
        >"$data/lines.csv"
    wait_quiet
    local run t0 t1 job count
    for run in $(seq "$RUNS"); do
        log "ingest run $run/$RUNS: awk alone, to /dev/null"
        t0=$(now)
        awk "$gen" >/dev/null
        t1=$(now)
        echo "{\"bench\": \"ingest-devnull\", \"run\": $run, \"secs\": $(elapsed "$t0" "$t1")}" >>"$out"

        log "ingest run $run/$RUNS: sqlite3 .import of the same lines in one transaction"
        rm -f "$data"/import.db*
        sqlite3 "$data/import.db" <<'EOF' >/dev/null
PRAGMA journal_mode=WAL;
CREATE TABLE job_logs (job_id INTEGER NOT NULL, seq INTEGER NOT NULL, stream INTEGER NOT NULL,
  ts INTEGER NOT NULL, text TEXT NOT NULL, PRIMARY KEY (job_id, seq)) WITHOUT ROWID;
EOF
        t0=$(now)
        sqlite3 "$data/import.db" <<EOF >/dev/null
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
BEGIN;
.import --csv $data/lines.csv job_logs
COMMIT;
EOF
        t1=$(now)
        count=$(sqlite3 "$data/import.db" 'SELECT count(*) FROM job_logs')
        [ "$count" = "$LINES" ] || die "sqlite3 imported $count rows, expected $LINES"
        echo "{\"bench\": \"ingest-sqlite3\", \"run\": $run, \"secs\": $(elapsed "$t0" "$t1"), \"rows\": $count}" >>"$out"

        log "ingest run $run/$RUNS: opsdeck"
        start_opsdeck ingest
        loadgen ingest --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" --lines "$LINES" \
            --run "$run" >>"$out"
        job=$(tail -1 "$out" | json_field job)
        # Every line is in the database (payload + 2 system lines).
        count=$(sqlite3 "$WORK/ingest/opsdeck.db" "SELECT count(*) FROM job_logs WHERE job_id = $job")
        [ "$count" = $((LINES + 2)) ] || die "opsdeck stored $count lines of job $job, expected $((LINES + 2))"
        stop_opsdeck
    done
    note_disturbance ingest
}

bench_queue() {
    local out=$RESULTS/queue.jsonl run t0 t1
    : >"$out"
    wait_quiet
    for run in $(seq "$RUNS"); do
        log "queue run $run/$RUNS: a shell loop spawning /bin/true $QUEUE_JOBS times"
        t0=$(now)
        sh -c "i=0; while [ \$i -lt $QUEUE_JOBS ]; do /bin/true; i=\$((i+1)); done"
        t1=$(now)
        echo "{\"bench\": \"queue-shell\", \"run\": $run, \"jobs\": $QUEUE_JOBS, \"secs\": $(elapsed "$t0" "$t1")}" >>"$out"

        log "queue run $run/$RUNS: opsdeck, $QUEUE_JOBS jobs, 4 workers, 16 enqueues in flight"
        start_opsdeck queue
        loadgen queue --url "http://127.0.0.1:$PORT" --jobs "$QUEUE_JOBS" --concurrency 16 |
            sed "s/^{/{\"run\": $run, /" >>"$out"
        stop_opsdeck
    done
    note_disturbance queue
}

bench_fanout() {
    local out=$RESULTS/fanout.jsonl
    : >"$out"
    wait_quiet
    log "fan-out: opsdeck (server on core 0, load generator on core 1), $FANOUT_SECS s per rate"
    start_opsdeck fanout pinned
    loadgen_pinned fanout --system opsdeck --url "http://127.0.0.1:$PORT" --subs 100 \
        --secs "$FANOUT_SECS" --start-rate 4000 --server-pid "$SERVER_PID" >>"$out"
    loadgen_pinned fanout --system opsdeck --url "http://127.0.0.1:$PORT" --subs 1000 \
        --secs "$FANOUT_SECS" --start-rate 1000 --server-pid "$SERVER_PID" >>"$out"
    stop_opsdeck
    log "fan-out: nginx + nchan (one worker on core 0, load generator on core 1)"
    start_nchan
    loadgen_pinned fanout --system nchan --url "http://127.0.0.1:$NCHAN_PORT" --subs 100 \
        --secs "$FANOUT_SECS" --start-rate 2000 --server-pid "$NGINX_WORKER" >>"$out"
    loadgen_pinned fanout --system nchan --url "http://127.0.0.1:$NCHAN_PORT" --subs 1000 \
        --secs "$FANOUT_SECS" --start-rate 200 --server-pid "$NGINX_WORKER" >>"$out"
    stop_nchan
    note_disturbance fanout
}

bench_resume() {
    local out=$RESULTS/resume.jsonl job
    : >"$out"
    wait_quiet
    log "resume: a finished $LINES-line job, Last-Event-ID: 999000 (server on core 0)"
    start_opsdeck resume pinned
    # The job to resume (its ingest figures on the pinned server are not reported).
    job=$(loadgen ingest --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" --lines "$LINES" \
        --run 0 | json_field job)
    loadgen_pinned resume --url "http://127.0.0.1:$PORT" --job "$job" --last-event-id 999000 --tries 100 >>"$out"
    stop_opsdeck
    note_disturbance resume
}

bench_idle() {
    local out=$RESULTS/idle.jsonl job
    : >"$out"
    wait_quiet
    log "idle: $IDLE_STREAMS open streams on a silent running job (server on core 0)"
    start_opsdeck idle pinned
    job=$(api POST /api/jobs '{"template":"silent","target":"idle","params":{}}' | json_field id)
    local i
    for i in $(seq 100); do
        [ "$(api GET "/api/jobs/$job" | json_field state)" = running ] && break
        sleep 0.1
    done
    loadgen_pinned idle --system opsdeck --url "http://127.0.0.1:$PORT" --job "$job" \
        --streams "$IDLE_STREAMS" --server-pid "$SERVER_PID" >>"$out"
    api POST "/api/jobs/$job/cancel" >/dev/null
    stop_opsdeck
    log "idle: $IDLE_STREAMS idle EventSource subscribers on nchan (worker on core 0)"
    start_nchan
    loadgen_pinned idle --system nchan --url "http://127.0.0.1:$NCHAN_PORT" --channel idle \
        --streams "$IDLE_STREAMS" --server-pid "$NGINX_WORKER" >>"$out"
    stop_nchan
    note_disturbance idle
}

# ---- terminal peers -------------------------------------------------------------------

setup_term_peers() {
    if ! python3 -c 'import terminado' 2>/dev/null; then
        log "installing terminado (PyPI)"
        python3 -m pip install --quiet 'terminado==0.18.1'
    fi
    if [ ! -f "$WORK/wetty/node_modules/wetty/build/main.js" ]; then
        log "installing wetty and socket.io-client (npm)"
        mkdir -p "$WORK/wetty"
        npm install --prefix "$WORK/wetty" --no-audit --no-fund --loglevel=error \
            'wetty@3.2.0' 'socket.io-client@4' >&2
    fi
    # npm 11 skips install scripts it was not told to trust: build node-pty
    # (wetty's PTY binding) from source if its binary is missing.
    local pty=$WORK/wetty/node_modules/node-pty
    if [ ! -f "$pty/build/Release/pty.node" ]; then
        log "building node-pty for wetty"
        (cd "$pty" && npx --yes node-gyp rebuild >&2)
    fi
    cp "$ROOT/bench/wetty/client.mjs" "$WORK/wetty/client.mjs"
}

wait_port() { # PORT PID LOG
    local i
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || die "the server on port $1 did not start: $(tail -5 "$3")"
        sleep 0.1
    done
    die "nothing listens on port $1"
}

# Starts terminado (core 0) running "$@" for each WebSocket.
start_terminado() {
    taskset -c 0 python3 "$ROOT/bench/terminado/app.py" "$TERMINADO_PORT" "$@" >"$WORK/terminado.log" 2>&1 &
    PEER_PID=$!
    PIDS+=("$PEER_PID")
    wait_port "$TERMINADO_PORT" "$PEER_PID" "$WORK/terminado.log"
}

# Starts wetty (core 0) running the command line "$1" for each connection.
start_wetty() {
    taskset -c 0 node "$WORK/wetty/node_modules/wetty/build/main.js" --host 127.0.0.1 \
        --port "$WETTY_PORT" --command "$1" >"$WORK/wetty.log" 2>&1 &
    PEER_PID=$!
    PIDS+=("$PEER_PID")
    wait_port "$WETTY_PORT" "$PEER_PID" "$WORK/wetty.log"
}

bench_term() {
    local out=$RESULTS/term.jsonl run
    : >"$out"
    setup_term_peers
    wait_quiet
    local seq_cmd="seq 1 $TERM_LINES" echo_cmd="sh -c 'stty raw -echo; exec cat'"
    for run in $(seq "$RUNS"); do
        log "terminal run $run/$RUNS: the PTY alone (seq and its reader on core 0)"
        taskset -c 0 "$BIN/loadgen" term --system pty --mode throughput --lines "$TERM_LINES" --run "$run" >>"$out"

        log "terminal run $run/$RUNS: opsdeck (server and shell on core 0, client on core 1)"
        start_opsdeck term pinned
        loadgen_pinned term --system opsdeck --mode throughput --run "$run" \
            --url "ws://127.0.0.1:$PORT/api/targets/term-seq/terminal?cols=200&rows=50" >>"$out"
        loadgen_pinned term --system opsdeck --mode echo --keys "$TERM_KEYS" --run "$run" \
            --url "ws://127.0.0.1:$PORT/api/targets/term-echo/terminal" >>"$out"
        stop_opsdeck

        log "terminal run $run/$RUNS: terminado"
        start_terminado seq 1 "$TERM_LINES"
        loadgen_pinned term --system terminado --mode throughput --run "$run" \
            --url "ws://127.0.0.1:$TERMINADO_PORT/websocket" >>"$out"
        stop_pid "$PEER_PID"
        start_terminado sh -c 'stty raw -echo; exec cat'
        loadgen_pinned term --system terminado --mode echo --keys "$TERM_KEYS" --run "$run" \
            --url "ws://127.0.0.1:$TERMINADO_PORT/websocket" >>"$out"
        stop_pid "$PEER_PID"

        log "terminal run $run/$RUNS: wetty"
        start_wetty "$seq_cmd"
        taskset -c 1 node "$WORK/wetty/client.mjs" "http://127.0.0.1:$WETTY_PORT" throughput "$run" >>"$out"
        stop_pid "$PEER_PID"
        start_wetty "$echo_cmd"
        taskset -c 1 node "$WORK/wetty/client.mjs" "http://127.0.0.1:$WETTY_PORT" echo "$run" "$TERM_KEYS" >>"$out"
        stop_pid "$PEER_PID"
    done
    note_disturbance term
}

# ---- agents -------------------------------------------------------------------------

# Enrols the bench agent on the running server's database; its token file.
enrol_agent() {
    local dir=$WORK/$1
    "$BIN/opsdeck" --config "$CONFIG" agent add bench-agent >"$dir/agent.token" 2>/dev/null
    echo "$dir/agent.token"
}

start_agent() { # TOKEN_FILE SPOOL
    RUST_LOG=warn "$BIN/opsdeck" agent --server "http://127.0.0.1:$PORT" --token-file "$1" --spool "$2" \
        >"$2.log" 2>&1 &
    AGENT_PID=$!
    PIDS+=("$AGENT_PID")
    local i
    for i in $(seq 100); do
        api GET /api/agents | grep -q '"status":"online"' && return
        sleep 0.1
    done
    die "the bench agent did not come online: $(tail -5 "$2.log")"
}

bench_agent() {
    local out=$RESULTS/agent.jsonl run token
    : >"$out"
    wait_quiet
    for run in $(seq "$RUNS"); do
        log "agent run $run/$RUNS: the ingest job locally, then on an agent"
        start_opsdeck agent
        loadgen ingest --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" --lines "$LINES" \
            --run "$run" | sed 's/"bench":"ingest"/"bench":"agent-ingest-local"/' >>"$out"
        token=$(enrol_agent agent)
        start_agent "$token" "$WORK/agent/spool"
        loadgen ingest --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" --lines "$LINES" \
            --template ingest-agent --target remote --run "$run" |
            sed 's/"bench":"ingest"/"bench":"agent-ingest-agent"/' >>"$out"
        stop_pid "$AGENT_PID"
        stop_opsdeck
    done
    log "agent: 100 cuts, return to the first resent line"
    start_opsdeck agent
    token=$(enrol_agent agent)
    loadgen agent-reconnect --url "http://127.0.0.1:$PORT" --opsdeck "$BIN/opsdeck" \
        --token-file "$token" --spool "$WORK/agent/spool" --samples 100 >>"$out"
    log "agent: cancel to process gone, 30 times"
    loadgen agent-cancel --url "http://127.0.0.1:$PORT" --opsdeck "$BIN/opsdeck" \
        --token-file "$token" --spool "$WORK/agent/spool" --samples 30 >>"$out"
    stop_opsdeck
    note_disturbance agent
}

# ---- PostgreSQL: replicas beside procrastinate and graphile-worker (issue 15) ---------

# psql as the superuser on the machine's PostgreSQL; notices (e.g. "does
# not exist, skipping") are not news.
psql_pg() { # DATABASE ARGS...
    local db=$1
    shift
    PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -p 5432 -U postgres -d "$db" \
        -qtAX -v ON_ERROR_STOP=1 "$@"
}
fresh_db() { psql_pg postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"; }
drop_db() { psql_pg postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)"; }

setup_pg_peers() {
    command -v psql >/dev/null || $SUDO apt-get install -y -q postgresql-client
    pg_isready -h 127.0.0.1 -p 5432 -q ||
        die "PostgreSQL is not answering on 127.0.0.1:5432: start it (.ci/run does) with: pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start"
    local venv=$WORK/venv
    if [ "$(cat "$venv/pins" 2>/dev/null)" != "${PG_PY_PINS[*]}" ]; then
        log "installing ${PG_PY_PINS[*]} into $venv (PyPI, binary wheels only)"
        rm -rf "$venv"
        python3 -m venv "$venv" 2>/dev/null ||
            { $SUDO apt-get install -y -q python3-venv && python3 -m venv "$venv"; }
        "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: "${PG_PY_PINS[@]}"
        echo "${PG_PY_PINS[*]}" >"$venv/pins"
    fi
    local gw=$ROOT/bench/graphile
    if ! cmp -s "$gw/package-lock.json" "$gw/node_modules/.bench-lock.json"; then
        log "installing graphile-worker (npm ci of bench/graphile/package-lock.json)"
        npm ci --prefix "$gw" --no-audit --no-fund --loglevel=error >&2
        cp "$gw/package-lock.json" "$gw/node_modules/.bench-lock.json"
    fi
}

# The versions of the systems compared, as one result line.
pg_versions() {
    local py node_versions
    py=$("$WORK/venv/bin/python" -c '
import importlib.metadata as m, json, platform
print(json.dumps({"procrastinate": m.version("procrastinate"), "psycopg": m.version("psycopg"),
                  "python": platform.python_version()}))')
    node_versions=$(cd "$ROOT/bench/graphile" && node -e '
const v = (p) => require(`./node_modules/${p}/package.json`).version;
console.log(JSON.stringify({ "graphile-worker": v("graphile-worker"), pg: v("pg"), node: process.versions.node }));')
    python3 - "$(psql_pg postgres -c 'SHOW server_version')" "$py" "$node_versions" <<'EOF'
import json, sys
print(json.dumps({"bench": "pg-versions", "postgresql": sys.argv[1], **json.loads(sys.argv[2]),
                  **json.loads(sys.argv[3])}))
EOF
}

# Writes the configuration of one opsdeck replica on PostgreSQL to $1:
# listening on port $2, named $3, on the database URL $4.
write_pg_config() {
    local dir=$1 port=$2 node=$3 url=$4
    cat >"$dir/opsdeck.toml" <<EOF
# Generated by bench/run.sh (pg).
[[targets]]
id = "engine"
kind = "local"

[[templates]]
id = "true"
command = ["true"]
exclusive = "none"
targets = ["engine"]

# 1,000,000 lines of 80 bytes, as in the ingest benchmark.
[[templates]]
id = "ingest"
command = ["awk", 'BEGIN {{ for (i = 1; i <= $LINES; i++) printf "%079d\n", i }}']
exclusive = "none"
max_log_bytes = "512MiB"
targets = ["engine"]

# A job that runs until its replica dies (the recovery benchmark).
[[templates]]
id = "hold"
command = ["sleep", "600"]
exclusive = "none"
targets = ["engine"]

[server]
addr = "127.0.0.1:$port"
database_url = "$url"
workers = 4

[cluster]
node = "$node"
EOF
}

# Starts $1 replicas of opsdeck (ports PORT, PORT+1, …) on a fresh database,
# one after the other: the first start runs the migrations (replicas
# starting together on an empty database are the cluster branch's concern,
# not this benchmark's). Sets REPLICA_PIDS, REPLICA_ARGS (the load
# generator's --url and --also-url), SERVER_PID (the first), CONFIG and
# OPSDECK_TOKEN.
start_pg_replicas() {
    fresh_db opsdeck_bench_pg
    REPLICA_PIDS=()
    REPLICA_ARGS=()
    local i dir port
    for i in $(seq "$1"); do
        dir=$WORK/pg-$i
        port=$((PORT + i - 1))
        rm -rf "$dir"
        mkdir -p "$dir"
        write_pg_config "$dir" "$port" "bench-$i" "$PG_URL/opsdeck_bench_pg"
        serve_opsdeck "$dir" "$dir/opsdeck.toml" "$port"
        REPLICA_PIDS+=("$SERVER_PID")
        if [ "$i" = 1 ]; then REPLICA_ARGS+=(--url "http://127.0.0.1:$port"); else REPLICA_ARGS+=(--also-url "http://127.0.0.1:$port"); fi
    done
    SERVER_PID=${REPLICA_PIDS[0]}
    CONFIG=$WORK/pg-1/opsdeck.toml
    OPSDECK_TOKEN=$("${SERVER_EXE:-$BIN/opsdeck}" --config "$CONFIG" token create --user admin --label bench 2>/dev/null)
    export OPSDECK_TOKEN
}

stop_pg_replicas() {
    local pid
    for pid in "${REPLICA_PIDS[@]}"; do stop_pid "$pid"; done
}

# The peers run their own worker as a child process (see their heads).
procrastinate_peer() {
    fresh_db opsdeck_bench_procrastinate
    BENCH_PG_DSN=$PG_URL/opsdeck_bench_procrastinate BENCH_PEER_LOG=$WORK/procrastinate.log \
        "$WORK/venv/bin/python" "$ROOT/bench/procrastinate/peer.py" "$@"
}
graphile_peer() {
    fresh_db opsdeck_bench_graphile
    BENCH_PG_DSN=$PG_URL/opsdeck_bench_graphile BENCH_PEER_LOG=$WORK/graphile.log \
        node "$ROOT/bench/graphile/peer.mjs" "$@"
}

# Is this part of the pg benchmark asked for (BENCH_PG_PARTS)?
pg_part() {
    case " ${BENCH_PG_PARTS:-queue latency ingest recovery} " in
        *" $1 "*) return 0 ;;
        *) return 1 ;;
    esac
}

bench_pg() {
    local out=$RESULTS/pg.jsonl run replicas job count db data=$WORK/pg-copy cpu0
    : >"$out"
    setup_pg_peers
    pg_versions >>"$out"
    mkdir -p "$data"
    # The same lines as the ingest benchmark's, as the CSV \copy reads:
    # job_id, seq, stream, ts (ms), text.
    awk "BEGIN { for (i = 1; i <= $LINES; i++) printf \"1,%d,0,%d,%079d\\n\", i, 1763900000000 + i, i }" \
        >"$data/lines.csv"
    wait_quiet

    pg_part queue && for run in $(seq "$RUNS"); do
        for replicas in 1 2; do
            log "pg queue run $run/$RUNS: opsdeck, $replicas replica(s) × 4 workers, $PG_JOBS jobs \`true\`, 16 enqueues in flight"
            start_pg_replicas "$replicas"
            cpu0=$(busy_cpu)
            loadgen queue "${REPLICA_ARGS[@]}" --jobs "$PG_JOBS" --concurrency 16 |
                sed "s/^{\"bench\":\"queue\",/{\"bench\":\"pg-queue\",\"system\":\"opsdeck\",\"run\":$run,/" >>"$out"
            queue_cpu "$out" opsdeck "$replicas" "$run" "$PG_JOBS" "$cpu0" "$(busy_cpu)"
            stop_pg_replicas
        done
        # N.B.: the peers' figure includes starting their worker and
        # client processes (Python, Node): a little high.
        log "pg queue run $run/$RUNS: procrastinate, worker concurrency 4, $PG_JOBS no-op jobs"
        cpu0=$(busy_cpu)
        procrastinate_peer queue "$PG_JOBS" 16 "$run" >>"$out"
        queue_cpu "$out" procrastinate 1 "$run" "$PG_JOBS" "$cpu0" "$(busy_cpu)"
        log "pg queue run $run/$RUNS: graphile-worker, concurrency 4, $PG_JOBS no-op jobs"
        cpu0=$(busy_cpu)
        graphile_peer queue "$PG_JOBS" 16 "$run" >>"$out"
        queue_cpu "$out" graphile-worker 1 "$run" "$PG_JOBS" "$cpu0" "$(busy_cpu)"
    done

    pg_part latency && for replicas in 1 2; do
        log "pg latency: opsdeck, $replicas replica(s), $PG_LATENCY_JOBS jobs at $PG_LATENCY_RATE/s"
        start_pg_replicas "$replicas"
        loadgen latency "${REPLICA_ARGS[@]}" --jobs "$PG_LATENCY_JOBS" --rate "$PG_LATENCY_RATE" |
            sed "s/^{\"bench\":\"latency\",/{\"bench\":\"pg-latency\",\"system\":\"opsdeck\",/" >>"$out"
        stop_pg_replicas
    done
    if pg_part latency; then
        log "pg latency: procrastinate, $PG_LATENCY_JOBS jobs at $PG_LATENCY_RATE/s"
        procrastinate_peer latency "$PG_LATENCY_JOBS" "$PG_LATENCY_RATE" >>"$out"
        log "pg latency: graphile-worker, $PG_LATENCY_JOBS jobs at $PG_LATENCY_RATE/s"
        graphile_peer latency "$PG_LATENCY_JOBS" "$PG_LATENCY_RATE" >>"$out"
    fi

    local t0 t1
    pg_part ingest && for run in $(seq "$RUNS"); do
        log "pg ingest run $run/$RUNS: psql \\copy of $LINES lines into a table shaped as job_logs"
        fresh_db opsdeck_bench_copy
        psql_pg opsdeck_bench_copy -c 'CREATE TABLE job_logs (job_id bigint NOT NULL, seq bigint NOT NULL,
            stream smallint NOT NULL, ts bigint NOT NULL, text text NOT NULL, PRIMARY KEY (job_id, seq))'
        t0=$(now)
        psql_pg opsdeck_bench_copy -c "\\copy job_logs FROM '$data/lines.csv' WITH (FORMAT csv)"
        t1=$(now)
        count=$(psql_pg opsdeck_bench_copy -c 'SELECT count(*) FROM job_logs')
        [ "$count" = "$LINES" ] || die "psql \\copy stored $count rows, expected $LINES"
        echo "{\"bench\": \"pg-ingest-copy\", \"run\": $run, \"secs\": $(elapsed "$t0" "$t1"), \"rows\": $count}" >>"$out"

        log "pg ingest run $run/$RUNS: opsdeck on PostgreSQL"
        start_pg_replicas 1
        loadgen ingest "${REPLICA_ARGS[@]}" --server-pid "$SERVER_PID" --lines "$LINES" --run "$run" |
            sed 's/^{"bench":"ingest",/{"bench":"pg-ingest",/' >>"$out"
        job=$(tail -1 "$out" | json_field job)
        # Every line is in the database (payload + 2 system lines).
        count=$(psql_pg opsdeck_bench_pg -c "SELECT count(*) FROM job_logs WHERE job_id = $job")
        [ "$count" = $((LINES + 2)) ] || die "opsdeck stored $count lines of job $job, expected $((LINES + 2))"
        stop_pg_replicas
    done
    if pg_part recovery; then bench_pg_recovery "$out"; fi
    for db in opsdeck_bench_pg opsdeck_bench_procrastinate opsdeck_bench_graphile opsdeck_bench_copy; do
        drop_db "$db"
    done
    note_disturbance pg
}

# Dead-replica recovery: two replicas with the default [cluster].node_timeout
# (15 s); a job runs on one, which gets SIGKILL; the time from the kill to
# the job's `failed` as the other replica reports it (it polls every 100 ms).
bench_pg_recovery() {
    local out=$1 run job node victim survivor t0 t1 state
    for run in $(seq "$RUNS"); do
        log "pg recovery run $run/$RUNS: SIGKILL the replica running a job; until the other fails it"
        start_pg_replicas 2
        job=$(api POST /api/jobs '{"template":"hold","target":"engine","params":{}}' | json_field id)
        node=
        for _ in $(seq 100); do
            node=$(api GET "/api/jobs/$job" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["node"] if j["state"] == "running" else "")')
            [ -n "$node" ] && break
            sleep 0.1
        done
        [ -n "$node" ] || die "the recovery job $job did not start"
        # Replica i is node bench-i on port PORT+i-1.
        victim=${node#bench-}
        survivor=$((3 - victim))
        t0=$(now)
        kill -KILL "${REPLICA_PIDS[$((victim - 1))]}"
        state=
        while [ "$state" != failed ]; do
            sleep 0.1
            state=$(curl -sf -H "Authorization: Bearer $OPSDECK_TOKEN" \
                "http://127.0.0.1:$((PORT + survivor - 1))/api/jobs/$job" | json_field state)
            [ "$(elapsed "$t0" "$(now)" | cut -d. -f1)" -lt 120 ] || die "job $job still $state 120 s after its replica died"
        done
        t1=$(now)
        echo "{\"bench\": \"pg-recovery\", \"run\": $run, \"secs\": $(elapsed "$t0" "$t1"), \"node_timeout_s\": 15}" >>"$out"
        stop_pg_replicas
    done
}

# ---- the front-end: a first visit on a throttled connection (issue 16) ----------------

# The release site, built as `make dist` builds it, carried by the binary
# (precompressed with brotli 11 and gzip: what a release serves).
setup_web() {
    log "building the release site (cargo leptos build --release --split) and a binary carrying it"
    cd "$ROOT"
    cargo leptos build --release --split
    "$CARGO_TARGET_DIR/release/opsdeck" embed-site --site "$ROOT/target/site" --out "$BIN/opsdeck-web.new"
    mv -f "$BIN/opsdeck-web.new" "$BIN/opsdeck-web"
    [ -f "$ROOT/end2end/node_modules/.installed" ] || npm ci --prefix "$ROOT/end2end" --no-audit --no-fund
    if [ ! -f "$RESULTS/machine.json" ]; then
        mkdir -p "$RESULTS"
        SERVER_EXE=$BIN/opsdeck-web machine >"$RESULTS/machine.json"
    fi
    (cd "$ROOT/target/site" && find . -type f -printf '%P %s\n' | sort) >"$WORK/site-files.txt"
}

# Each page cold (empty cache) and opened from the dashboard, as admin, in
# Chromium throttled to 1.6 Mbit/s down, 150 ms round trip
# (bench/web/firstload.cjs).
bench_web() {
    local out=$RESULTS/web.jsonl job
    : >"$out"
    wait_quiet
    SERVER_EXE=$BIN/opsdeck-web start_opsdeck web
    job=$(api POST /api/jobs '{"template": "true", "target": "engine", "params": {}}' | json_field id)
    cat >"$WORK/web/pages.json" <<EOF
[
  {"name": "dashboard", "path": "/", "ready": "h1:text-is('Dashboard')"},
  {"name": "jobs", "path": "/jobs", "ready": "h1:text-is('Jobs')"},
  {"name": "job", "path": "/jobs/$job", "ready": "h1:has-text('true')"},
  {"name": "target", "path": "/targets/term-echo", "ready": "h1:has-text('term-echo')"},
  {"name": "console", "path": "/targets/term-echo/console", "ready": ".xterm-rows"},
  {"name": "account", "path": "/account", "ready": "h1:text-is('Your account')"},
  {"name": "admin users", "path": "/admin/users", "ready": "h1:text-is('Users')"},
  {"name": "admin audit", "path": "/admin/audit", "ready": "h1:text-is('Audit log')"},
  {"name": "admin agents", "path": "/admin/agents", "ready": "h1:text-is('Agents')"},
  {"name": "admin jobs", "path": "/admin/jobs", "ready": "h1:text-is('All jobs')"}
]
EOF
    python3 - "$WORK/site-files.txt" >>"$out" <<'EOF'
import json, sys
files = dict(l.rsplit(" ", 1) for l in open(sys.argv[1]).read().splitlines())
print(json.dumps({"bench": "web-site", "files": {k: int(v) for k, v in files.items()}}))
EOF
    NODE_PATH=$ROOT/end2end/node_modules node "$ROOT/bench/web/firstload.cjs" \
        "http://127.0.0.1:$PORT" "$PASSWORD" "$RUNS" "$out" "$WORK/web/pages.json"
    stop_opsdeck
    note_disturbance web
}

report() {
    python3 "$ROOT/bench/report.py" "$RESULTS"
}



# ---- main ------------------------------------------------------------------------------

ALL=(ingest queue fanout resume idle term agent pg web)
todo=("$@")
[ ${#todo[@]} = 0 ] && todo=("${ALL[@]}")
for b in "${todo[@]}"; do
    case $b in
    ingest | queue | fanout | resume | idle | term | agent | pg | web | report) ;;
    *) die "unknown benchmark '$b' (ingest, queue, fanout, resume, idle, term, agent, pg, web, report)" ;;
    esac
done
if [ "${todo[*]}" = report ]; then
    report
    exit 0
fi
mkdir -p "$WORK" "$BIN"
# The engine and stream benchmarks' set-up (nginx, the server, the load
# generator) is not needed by `web` alone.
for b in "${todo[@]}"; do
    if [ "$b" != web ] && [ "$b" != report ]; then
        setup
        break
    fi
done
[[ " ${todo[*]} " == *" web "* ]] && { rm -f "$RESULTS/machine.json"; setup_web; }
for b in "${todo[@]}"; do
    [ "$b" = report ] || "bench_$b"
done
report
