#!/usr/bin/env bash
# Job intake: hitd (SQLite, synchronous=FULL) against the Go in-memory reference collector.
#
#   benchmarks/intake.sh [--runs 3] [--duration 5] [--conns 50] [--batch 100]
#                        [--servers "go go-durable hitd"] [--gen hit|wrk]
#
# Each server on core 0 (the Go collector with GOMAXPROCS=1; hitd one process, its threads
# included), the load generator on core 1 (a full core: here the server is what is measured).
# --servers may add `go-durable`: the same Go collector with -db, committing every job to SQLite
# before its 202 as hitd does (WAL, synchronous=FULL, group commit; collector/store_sqlite.go):
# the like-for-like anchor; `bare` (benchmarks/bare_intake.py): hitd's HTTP shape and SQLite group
# commit with nothing else, no validation and no job run: the ceiling for Python here; and
# `hitd-pg`: hitd on a PostgreSQL store, a fresh database per run on the server at
# $HITD_PG_URL (default postgresql://postgres@127.0.0.1:5432, the machine's own; it is not
# pinned, so its CPU is on top of hitd's core and shares core 1 with the generator).
# POST /jobs with one job per request, then with arrays of --batch jobs; medians of --runs runs.
# Every run starts its server fresh (hitd on its default store ./hitd.db in a new temp dir: WAL,
# synchronous=FULL, on this machine's disk), runs the generator for --duration seconds, then
# reads GET /stats: the jobs the server says it accepted are compared with the 2xx answers the
# client counted times the batch size, so the table holds jobs really accepted.
# hitd and Go: 16 workers (each one's default) running the built-in `hello` as jobs arrive,
# a queue large enough that no run is answered 429 (see GO_QUEUE, HITD_QUEUE), per-job logging off.
#
# Generator: hit (the compiled build's; `.venv/bin/hit` with HITPOOL_PURE=1) when it works, else
# wrk with a Lua POST script. The Go collector is built here with the system's go (no modules
# fetched, GOCACHE in benchmarks/out).
# Bounded: about 2 minutes with the defaults; loopback only. Not part of the test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

RUNS=3
DURATION=5
CONNS=50
BATCH=100
SERVERS="go hitd"
GEN=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --gen) GEN=$2; shift 2 ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "intake.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]?$ ]] || { echo "intake.sh: --runs takes 1..99" >&2; exit 2; }
[[ $DURATION =~ ^[1-9][0-9]?$ ]] || { echo "intake.sh: --duration takes whole seconds 1..99" >&2; exit 2; }
[[ $CONNS =~ ^[1-9][0-9]{0,3}$ ]] || { echo "intake.sh: --conns takes 1..9999" >&2; exit 2; }
[[ $BATCH =~ ^[0-9]+$ ]] && ((BATCH >= 2 && BATCH <= 1000)) ||
    { echo "intake.sh: --batch takes 2..1000 (hitd's limit per request)" >&2; exit 2; }
[[ -z $GEN || $GEN == hit || $GEN == wrk ]] || { echo "intake.sh: --gen takes hit or wrk" >&2; exit 2; }
for s in $SERVERS; do
    [[ $s == go || $s == go-durable || $s == hitd || $s == hitd-pg || $s == bare ]] ||
        { echo "intake.sh: --servers takes go, go-durable, hitd, hitd-pg and bare (got $s), e.g. --servers \"go go-durable hitd\"" >&2; exit 2; }
done
MEASURE_LIMIT_S=$((DURATION + 30))
[[ $(nproc) -ge 2 ]] || die "needs 2 cores (server on core 0, generator on core 1)"

# Queue sizes: each as large as lets it take a whole run without a 429, and no larger. hitd's
# queue is rows in SQLite and its workers fall behind a burst, so it gets 1,000,000 (its default
# 100,000 fills within a batch run and answers 429). The Go collector keeps up with the burst,
# and its channel buffer is allocated whole and scanned by every GC cycle: its default 100,000
# measured ~1.5x faster than 1,000,000 here. /stats' rejected counts are kept for each run.
GO_QUEUE=100000
PG_URL=${HITD_PG_URL:-postgresql://postgres@127.0.0.1:5432}
PG_DB=
HITD_QUEUE=1000000
WORKERS=${WORKERS:-16} # both servers; the env overrides it for experiments

# --- what we need ---------------------------------------------------------------------------------
need_venv
HIT="$VENV_BIN/hit"
HITD="$VENV_BIN/hitd"
if [[ -z $GEN ]]; then
    if "$HIT" --help >/dev/null 2>&1; then GEN=hit; else GEN=wrk; fi
fi
[[ $GEN == hit ]] && { "$HIT" --help >/dev/null 2>&1 || die "--gen hit, but $HIT --help fails"; }
[[ $GEN == wrk ]] && need_apt wrk wrk
if [[ " $SERVERS " == *" hitd "* ]] && ! "$HITD" --help >/dev/null 2>&1; then
    log "hitd is not installed or not working yet ($HITD --help fails): skipping it"
    SERVERS=${SERVERS//hitd/}
fi
COLLECTOR="$OUT_DIR/collector"
if [[ " $SERVERS " == *" go "* ]]; then
    need_apt go golang-go
    mkdir -p "$OUT_DIR/gocache"
    log "building the Go collector ($(go version | cut -d' ' -f3))"
    (cd "$BENCH_DIR/collector" && GOCACHE="$OUT_DIR/gocache" GOFLAGS=-mod=mod GOPROXY=off \
        CGO_ENABLED=0 go build -o "$COLLECTOR" .) || die "go build failed"
fi
COLLECTOR_DURABLE="$OUT_DIR/collector-durable"
if [[ " $SERVERS " == *" go-durable "* ]]; then
    # SQLite through Debian's packaged mattn/go-sqlite3 (cgo) on the system's libsqlite3, the
    # library Python's sqlite3 module links: GOPATH mode on /usr/share/gocode, nothing fetched.
    need_apt go golang-go
    need_apt gcc gcc
    need_apt_file /usr/include/sqlite3.h libsqlite3-dev
    need_apt_file /usr/share/gocode/src/github.com/mattn/go-sqlite3 golang-github-mattn-go-sqlite3-dev
    mkdir -p "$OUT_DIR/gocache"
    log "building the durable Go collector (-tags \"durable libsqlite3\", SQLite $(python3 -c 'import sqlite3; print(sqlite3.sqlite_version)') as Python's)"
    (cd "$BENCH_DIR/collector" && GOCACHE="$OUT_DIR/gocache" GO111MODULE=off GOPATH=/usr/share/gocode \
        CGO_ENABLED=1 go build -tags "durable libsqlite3" -o "$COLLECTOR_DURABLE" .) || die "go build (durable) failed"
fi
if [[ " $SERVERS " == *" hitd-pg "* ]]; then
    command -v psql >/dev/null || die "hitd-pg needs psql (apt-get install postgresql-client)"
    psql "$PG_URL/postgres" -qXc "SELECT 1" >/dev/null 2>&1 ||
        die "hitd-pg: no PostgreSQL answers at $PG_URL (set HITD_PG_URL)"
fi
[[ -n ${SERVERS// /} ]] || die "no server to measure"

cg_detect # the generator runs in a cgroup (a full core) so that cleanup can find all of it
TMP_DIR=$(mktemp -d /tmp/hitpool-intake.XXXXXX)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$OUT_DIR/intake-$STAMP.jsonl"
RAW="$OUT_DIR/intake-$STAMP"
mkdir -p "$RAW"

# --- bodies and generator scripts -------------------------------------------------------------------
JOB='{"task":"hello","args":{"name":"bench"}}'
echo -n "$JOB" >"$TMP_DIR/body-single.json"
python3 -c 'import sys; n, job = int(sys.argv[1]), sys.argv[2]; print("[" + ",".join([job] * n) + "]", end="")' \
    "$BATCH" "$JOB" >"$TMP_DIR/body-batch.json"
for shape in single batch; do
    {
        echo 'wrk.method = "POST"'
        echo 'wrk.headers["Content-Type"] = "application/json"'
        echo "wrk.body = [==[$(cat "$TMP_DIR/body-$shape.json")]==]"
        cat <<'EOF'
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        '{"requests": %d, "duration_us": %d, "p99_us": %d, "errors": {"connect": %d, '
        .. '"read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
        summary.requests, summary.duration, latency:percentile(99.0),
        e.connect, e.read, e.write, e.status, e.timeout))
end
EOF
    } >"$TMP_DIR/post-$shape.lua"
done

gen_cmd() { # gen_cmd SHAPE URL -> sets CMD
    local shape=$1 url=$2
    case $GEN in
    hit) CMD=("$HIT" -z "${DURATION}s" -c "$CONNS" -m POST -d "@$TMP_DIR/body-$shape.json"
        -H "Content-Type: application/json" --json "$url") ;;
    wrk) CMD=(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$TMP_DIR/post-$shape.lua" "$url") ;;
    esac
}

# --- servers --------------------------------------------------------------------------------------
SERVER_PID=""
SERVER_PORT=""
start_server() { # start_server NAME DIR
    local name=$1 dir=$2
    SERVER_PORT=$(python3 "$STATS" freeport)
    mkdir -p "$dir"
    case $name in
    go)
        (cd "$dir" && GOMAXPROCS=1 exec taskset -c 0 "$COLLECTOR" -port "$SERVER_PORT" \
            -workers "$WORKERS" -queue-size "$GO_QUEUE") >"$dir/server.log" 2>&1 &
        ;;
    go-durable)
        # Its queue is in memory like `go`'s (the rows are the durable copy), so the same size.
        (cd "$dir" && GOMAXPROCS=1 exec taskset -c 0 "$COLLECTOR_DURABLE" -port "$SERVER_PORT" \
            -workers "$WORKERS" -queue-size "$GO_QUEUE" -db ./collector.db) >"$dir/server.log" 2>&1 &
        ;;
    hitd)
        # No --store: hitd's default store, ./hitd.db in this fresh directory (SQLite, FULL).
        (cd "$dir" && exec taskset -c 0 "$HITD" --port "$SERVER_PORT" --workers "$WORKERS" \
            --queue-size "$HITD_QUEUE" --log-level warning --grace 1) >"$dir/server.log" 2>&1 &
        ;;
    hitd-pg)
        PG_DB="hitpool_intake_$$_$RANDOM"
        psql "$PG_URL/postgres" -qXc "CREATE DATABASE $PG_DB" >/dev/null ||
            die "hitd-pg: cannot create a database on $PG_URL (set HITD_PG_URL)"
        (cd "$dir" && exec taskset -c 0 "$HITD" --port "$SERVER_PORT" --workers "$WORKERS" \
            --queue-size "$HITD_QUEUE" --log-level warning --grace 1 \
            --store "$PG_URL/$PG_DB") >"$dir/server.log" 2>&1 &
        ;;
    bare)
        # The Python ceiling: the same HTTP shape and group commit, nothing else (no job runs).
        (cd "$dir" && exec taskset -c 0 "$PY" "$BENCH_DIR/bare_intake.py" --port "$SERVER_PORT" \
            --db ./bare.db) >"$dir/server.log" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
    own_pid "$SERVER_PID"
    python3 "$STATS" wait-http "http://127.0.0.1:$SERVER_PORT/healthz" 15 ||
        die "$name did not answer /healthz within 15 s: $(tail -5 "$dir/server.log")"
}

server_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }

accepted_now() { # the server's own count of accepted jobs
    python3 "$STATS" get-json "http://127.0.0.1:$SERVER_PORT/stats" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["accepted"])'
}

# One job through each server before measuring, so a server that answers the benchmark's body
# with an error stops the script with its answer instead of producing a table of errors.
preflight() {
    python3 - "http://127.0.0.1:$SERVER_PORT/jobs" "$TMP_DIR/body-batch.json" <<'EOF'
import sys, urllib.request, urllib.error
url, path = sys.argv[1], sys.argv[2]
req = urllib.request.Request(url, data=open(path, "rb").read(), method="POST",
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        sys.exit(0 if r.status == 202 else f"preflight: {r.status} {r.read()[:300]!r}")
except urllib.error.HTTPError as e:
    sys.exit(f"preflight: {e.code} {e.read()[:300]!r}")
EOF
}

CLK_TCK=$(getconf CLK_TCK)
log "generator: $GEN on core 1; servers: [$SERVERS] on core 0; $RUNS runs x ${DURATION}s x {single, batch of $BATCH}, $CONNS connections; $(load_note)"
for run in $(seq "$RUNS"); do
    for shape in single batch; do
        batch=1
        [[ $shape == batch ]] && batch=$BATCH
        for server in $SERVERS; do
            dir="$TMP_DIR/$server-$shape-$run"
            start_server "$server" "$dir"
            preflight || die "$server refused the benchmark's job body (see above)"
            sleep 0.5 # let the preflight batch run through the workers
            quiet_wait
            base=$(accepted_now)
            gen_cmd "$shape" "http://127.0.0.1:$SERVER_PORT/jobs"
            out="$RAW/$server-$shape-$run.out"
            t0=$(server_ticks)
            rc=0
            cg_make "gen-$server-$shape-$run" 100000 100000 # a full core: in a cgroup for cleanup
            measure "$RAW/$server-$shape-$run.time" "$CG_DIR" 1 "${CMD[@]}" >"$out" 2>"$RAW/$server-$shape-$run.err" || rc=$?
            t1=$(server_ticks)
            [[ -n $CG_DIR ]] && rmdir "$CG_DIR" 2>/dev/null || true
            python3 "$STATS" get-json "http://127.0.0.1:$SERVER_PORT/stats" >"$RAW/$server-$shape-$run.stats.json"
            server_accepted=$(($(accepted_now) - base))
            server_rejected=$(python3 -c 'import json,sys; r = json.load(open(sys.argv[1]))["rejected"]; print(sum(r.values()) if isinstance(r, dict) else r)' "$RAW/$server-$shape-$run.stats.json")
            stop_pid "$SERVER_PID"
            if [[ -n $PG_DB ]]; then
                psql "$PG_URL/postgres" -qXc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null || true
                PG_DB=""
            fi
            store="memory (none)"
            if [[ $server == hitd ]]; then
                store="sqlite FULL"
                [[ -f $dir/hitd.db ]] || store="? (no ./hitd.db found)"
            elif [[ $server == go-durable ]]; then
                store="sqlite FULL, group commit"
                [[ -f $dir/collector.db ]] || store="? (no ./collector.db found)"
            elif [[ $server == hitd-pg ]]; then
                store="postgresql (unpinned server)"
            elif [[ $server == bare ]]; then
                store="sqlite FULL, runs no job"
            fi
            if ! rec=$(python3 "$STATS" parse "$GEN" "$out" server="$server" shape="$shape" \
                batch="$batch" run="$run" store="$store" server_accepted="$server_accepted" server_rejected="$server_rejected" \
                exit_code="$rc" cpu_cores="$(cpu_cores "$RAW/$server-$shape-$run.time")" \
                server_cpu="$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN{printf "%.2f", (b - a) / hz / d}')" \
                load="$(cut -d' ' -f1 /proc/loadavg)" busy_before="$BUSY_BEFORE" 2>"$RAW/$server-$shape-$run.parse-err"); then
                log "run $run $server $shape: could not parse the generator's output (exit $rc): $out"
                continue
            fi
            echo "$rec" >>"$RESULTS"
            log "run $run $server $shape: $(python3 "$STATS" summary "$rec")"
            rm -rf "$dir"
        done
    done
done

echo
echo "## Job intake, $CONNS connections, ${DURATION} s per run, median of $RUNS runs"
echo
echo "Servers on core 0 (Go $(go version 2>/dev/null | cut -d' ' -f3) net/http with GOMAXPROCS=1, go-durable its threads included; hitd one process), generator $GEN on core 1."
echo "Both with $WORKERS workers running hello as jobs arrive; queue size: Go $GO_QUEUE, hitd $HITD_QUEUE (no run may be answered 429: see errors); per-job logging off."
echo "Bodies: single = $(cat "$TMP_DIR/body-single.json") per POST /jobs; batch = an array of $BATCH of them."
echo "hitd store: its default ./hitd.db (SQLite WAL, synchronous=FULL) in a fresh temp dir on $(df --output=source "$TMP_DIR" | tail -1) per run."
echo "Machine: $(nproc) x $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), shared with other work ($(load_note) at the end)."
echo
python3 "$STATS" intake-table "$RESULTS"
echo
echo "Reproduce: benchmarks/intake.sh --runs $RUNS --duration $DURATION --conns $CONNS --batch $BATCH --servers \"$SERVERS\" --gen $GEN"
echo "Generator command (under taskset -c 1), per body:"
for shape in single batch; do
    gen_cmd "$shape" "http://127.0.0.1:PORT/jobs"
    printf '    '
    printf '%q ' "${CMD[@]}"
    echo
done
echo "Raw outputs: $RAW/, one JSON line per run: $RESULTS"
