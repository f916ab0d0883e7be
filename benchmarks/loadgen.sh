#!/usr/bin/env bash
# Side-by-side HTTP load generators against one nginx, at equal CPU.
#
#   benchmarks/loadgen.sh [--runs 3] [--duration 5] [--conns 50] [--mode half|two-core|view]
#                         [--tools "wrk hey hit bare aiohttp locust"]
#
# nginx: one worker, pinned to core 0, loopback, a 13-byte static file, access log off, keep-alive
# without a request limit, stub_status for its own request counter. Each generator: pinned to
# core 1 in its own cgroup with a CPU quota of half a core (cpu.max "50000 100000"), so that
# nginx on a full core is not the bottleneck and every tool gets the same budget; locust, as in
# the issue, gets a full core. Runs are interleaved (wrk, hey, hit, ... then again) so drift on
# this shared machine spreads over every tool. Each run's count is checked against nginx's.
#
# Installs what is missing: nginx, wrk, hey (apt-get); locust, aiohttp, uvloop into the separate
# benchmarks/.venv-bench (never the project's .venv); the project's .venv via make.
# Bounded: RUNS x tools x DURATION plus start-up, about 2 minutes with the defaults. Loopback only.
# Raw outputs and a JSON line per run go to benchmarks/out/. Not part of the test suite.
#
# --mode half (the default) is the above. --mode two-core: nginx with 2 workers and each
# generator both unpinned over cores 0-1 with no quota, `wrk -t2` against `hit -p 2` (and hey,
# which uses every core anyway); tools default to "wrk hit", may be any of "wrk hit hey". The
# machine's two cores bound it: nginx and the generator share them, so a generator's req/s is
# what its own CPU per request leaves to nginx (the table's req per generator CPU-s says it
# directly). --mode view: the live view's cost, hit three ways on core 1 at half a core:
# `hit-json` (--json: no view), `hit-pipe` (stdout a file: a plain line a second on stderr) and
# `hit-tty` (stdout a terminal, through `script`: the frame redrawn in place); tools default
# to all three, may be any of them; script's own copying of the frames is inside the budget.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

RUNS=3
DURATION=5
CONNS=50
TOOLS=""
MODE=half
while [[ $# -gt 0 ]]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --tools) TOOLS=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "loadgen.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]?$ ]] || { echo "loadgen.sh: --runs takes 1..99" >&2; exit 2; }
[[ $DURATION =~ ^[1-9][0-9]?$ ]] || { echo "loadgen.sh: --duration takes whole seconds 1..99" >&2; exit 2; }
[[ $CONNS =~ ^[1-9][0-9]{0,3}$ ]] || { echo "loadgen.sh: --conns takes 1..9999" >&2; exit 2; }
case $MODE in
half) ALLOWED="wrk hey hit bare aiohttp locust" ;;
two-core) ALLOWED="wrk hit hey"; DEFAULT_TOOLS="wrk hit" ;;
view) ALLOWED="hit-json hit-pipe hit-tty" ;;
*) echo "loadgen.sh: --mode takes half, two-core or view (got $MODE)" >&2; exit 2 ;;
esac
[[ -n $TOOLS ]] || TOOLS=${DEFAULT_TOOLS:-$ALLOWED}
for t in $TOOLS; do
    [[ " $ALLOWED " == *" $t "* ]] ||
        { echo "loadgen.sh: --mode $MODE takes --tools from \"$ALLOWED\" (got $t)" >&2; exit 2; }
done
if [[ $MODE == two-core ]]; then
    GEN_CPUS=0,1 # unpinned over both cores, as a user would run them
    NGINX_WORKERS=2
    NGINX_AFFINITY="" # both workers free to run on either core
else
    GEN_CPUS=1
    NGINX_WORKERS=1
    NGINX_AFFINITY="worker_cpu_affinity 01;"
fi
MEASURE_LIMIT_S=$((DURATION + 30))
[[ $(nproc) -ge 2 ]] || die "needs 2 cores (server on core 0, generators on core 1)"

# --- what we need ---------------------------------------------------------------------------------
need_apt nginx nginx
need_apt wrk wrk
need_apt hey hey
need_venv
BVENV="$BENCH_DIR/.venv-bench"
if [[ " $TOOLS " == *" aiohttp "* || " $TOOLS " == *" locust "* ]]; then
    if ! "$BVENV/bin/python" -c 'import aiohttp, uvloop, locust' 2>/dev/null; then
        log "creating $BVENV with locust, aiohttp, uvloop (kept apart from the project's .venv)"
        [[ -x $BVENV/bin/python ]] || python3 -m venv "$BVENV"
        echo '*' >"$BVENV/.gitignore" # the venv ignores itself, like Python 3.13's venv does
        "$BVENV/bin/pip" install -q --disable-pip-version-check locust aiohttp uvloop >&2 ||
            die "pip install into $BVENV failed"
    fi
fi
HIT="$VENV_BIN/hit"
if [[ " $TOOLS " == *" hit"* ]] && ! "$HIT" --help >/dev/null 2>&1; then
    log "hit is not installed or not working yet ($HIT --help fails): skipping it"
    TOOLS=$(tr ' ' '\n' <<<"$TOOLS" | grep -v '^hit' | tr '\n' ' ')
fi
[[ " $TOOLS " == *" hit-tty "* ]] && { command -v script >/dev/null || need_apt script bsdutils; }

cg_detect
log "CPU budget mechanism: $CG_NOTE"
TMP_DIR=$(mktemp -d /tmp/hitpool-loadgen.XXXXXX)
chmod 755 "$TMP_DIR" # nginx workers run as nobody and read the static file from here
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$OUT_DIR/loadgen-$STAMP.jsonl"
RAW="$OUT_DIR/loadgen-$STAMP"
mkdir -p "$RAW"

# --- nginx on core 0 (both cores, 2 workers, with --mode two-core) ------------------------------------------------------------------------------
PORT=$(python3 "$STATS" freeport)
mkdir -p "$TMP_DIR/www" "$TMP_DIR/logs"
printf 'hello, world\n' >"$TMP_DIR/www/index.html"
chmod 644 "$TMP_DIR/www/index.html"
cat >"$TMP_DIR/nginx.conf" <<EOF
daemon off;
worker_processes $NGINX_WORKERS;
$NGINX_AFFINITY
pid $TMP_DIR/nginx.pid;
error_log $TMP_DIR/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 100000000;  # no reconnects mid-run (default is 1000)
    client_body_temp_path $TMP_DIR/body;
    proxy_temp_path $TMP_DIR/proxy;
    fastcgi_temp_path $TMP_DIR/fastcgi;
    uwsgi_temp_path $TMP_DIR/uwsgi;
    scgi_temp_path $TMP_DIR/scgi;
    server {
        listen 127.0.0.1:$PORT;
        root $TMP_DIR/www;
        location = /nginx_status { stub_status; }
    }
}
EOF
NGINX_CPUS=0
[[ $MODE == two-core ]] && NGINX_CPUS=0,1
taskset -c "$NGINX_CPUS" nginx -p "$TMP_DIR" -e "$TMP_DIR/logs/error.log" -c "$TMP_DIR/nginx.conf" &
own_pid $!
URL="http://127.0.0.1:$PORT/index.html"

# nginx's own count: stub_status "requests" (it counts the status request itself too).
nginx_requests() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
    printf 'GET /nginx_status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    line=$(awk '/server accepts handled requests/{getline; print $3}' <&3)
    exec 3>&-
    echo "$line"
}
for _ in $(seq 50); do nginx_requests >/dev/null 2>&1 && break; sleep 0.1; done
nginx_requests >/dev/null 2>&1 || die "nginx did not start: $(cat "$TMP_DIR/logs/error.log")"

# --- the generators -------------------------------------------------------------------------------
cat >"$TMP_DIR/report.lua" <<'EOF'
-- wrk's done() hook: one JSON line with the totals and p99 (microseconds).
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        '{"requests": %d, "duration_us": %d, "p99_us": %d, "errors": {"connect": %d, '
        .. '"read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
        summary.requests, summary.duration, latency:percentile(99.0),
        e.connect, e.read, e.write, e.status, e.timeout))
end
EOF
cat >"$TMP_DIR/locustfile.py" <<'EOF'
from locust import FastHttpUser, constant, task


class Bench(FastHttpUser):
    wait_time = constant(0)  # back-to-back requests, like every other generator here

    @task
    def index(self) -> None:
        self.client.get("/index.html")
EOF

# cmd_for TOOL -> sets CMD (an array) and BUDGET (quota_us, label)
THREADS=1 # wrk -t, hit -p
[[ $MODE == two-core ]] && THREADS=2
cmd_for() {
    local tool=$1
    QUOTA=50000
    case $tool in
    wrk) CMD=(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" -s "$TMP_DIR/report.lua" "$URL") ;;
    hey) CMD=(hey -z "${DURATION}s" -c "$CONNS" "$URL") ;;
    hit)
        CMD=("$HIT" -z "${DURATION}s" -c "$CONNS" --json "$URL")
        ((THREADS > 1)) && CMD=("${CMD[@]:0:5}" -p "$THREADS" "${CMD[@]:5}")
        ;;
    hit-json) CMD=("$HIT" -z "${DURATION}s" -c "$CONNS" --json "$URL") ;;
    hit-pipe) CMD=("$HIT" -z "${DURATION}s" -c "$CONNS" "$URL") ;;
    hit-tty)
        # script(1) gives hit a pseudo-terminal as stdout: the frame is redrawn in place. Its
        # size comes from COLUMNS/LINES, as no real terminal is behind it.
        CMD=(env TERM=xterm COLUMNS=120 LINES=40 script -qfec
            "$(printf '%q ' "$HIT" -z "${DURATION}s" -c "$CONNS" "$URL")" /dev/null)
        ;;
    bare) CMD=("$PY" "$BENCH_DIR/bare_client.py" -c "$CONNS" -z "$DURATION" "$URL") ;;
    aiohttp) CMD=("$BVENV/bin/python" "$BENCH_DIR/aiohttp_client.py" -c "$CONNS" -z "$DURATION" "$URL") ;;
    locust)
        QUOTA=100000 # the issue measures locust at a full core
        CMD=("$BVENV/bin/locust" -f "$TMP_DIR/locustfile.py" --headless -u "$CONNS" -r "$CONNS"
            -t "${DURATION}s" -H "http://127.0.0.1:$PORT" --only-summary --loglevel WARNING)
        ;;
    *) die "unknown tool $tool" ;;
    esac
    if [[ $MODE == two-core ]]; then
        QUOTA=200000 # both cores: no limit (the cgroup is there for cleanup)
        BUDGET="cores 0-1, shared with nginx"
    elif [[ $CG_MODE == none ]]; then
        BUDGET="core 1, no quota"
    else
        BUDGET="$(awk -v q="$QUOTA" 'BEGIN{printf "%.1f", q / 100000}') core"
    fi
}

log "nginx ($NGINX_WORKERS worker(s)) on 127.0.0.1:$PORT (cores $NGINX_CPUS); mode $MODE; warming up"
cg_exec "" "$GEN_CPUS" wrk -t"$THREADS" -c"$CONNS" -d1s "$URL" >/dev/null
log "$RUNS runs x [$TOOLS] x ${DURATION}s, $CONNS connections; $(load_note)"
for run in $(seq "$RUNS"); do
    for tool in $TOOLS; do
        cmd_for "$tool"
        cg_make "$tool-$run" "$QUOTA" 100000
        out="$RAW/$tool-$run.out"
        quiet_wait
        before=$(nginx_requests)
        rc=0
        measure "$RAW/$tool-$run.time" "$CG_DIR" "$GEN_CPUS" "${CMD[@]}" >"$out" 2>"$RAW/$tool-$run.err" </dev/null || rc=$?
        after=$(nginx_requests)
        server_count=$((after - before - 1))
        read -r periods throttled < <(cg_throttled "$CG_DIR")
        [[ -n $CG_DIR ]] && rmdir "$CG_DIR" 2>/dev/null || true
        parse_src=$out
        [[ $tool == locust ]] && parse_src="$RAW/$tool-$run.err" # locust logs its summary there
        if ! rec=$(python3 "$STATS" parse "$tool" "$parse_src" tool="$tool" run="$run" \
            budget="$BUDGET" server_count="$server_count" exit_code="$rc" \
            cpu_cores="$(cpu_cores "$RAW/$tool-$run.time")" \
            cfs_periods="${periods/-/null}" cfs_throttled="${throttled/-/null}" \
            load="$(cut -d' ' -f1 /proc/loadavg)" busy_before="$BUSY_BEFORE" 2>"$RAW/$tool-$run.parse-err"); then
            log "run $run $tool: could not parse its output (exit $rc), see $out and $RAW/$tool-$run.err"
            continue
        fi
        echo "$rec" >>"$RESULTS"
        log "run $run $tool: $(python3 "$STATS" summary "$rec")"
    done
done

# --- the table --------------------------------------------------------------------------------------
echo
echo "## HTTP load generators ($MODE), $CONNS connections, ${DURATION} s per run, median of $RUNS runs"
echo
if [[ $MODE == two-core ]]; then
    echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'): 2 workers, unpinned on cores 0-1, 13-byte static file, loopback."
    echo "Generators unpinned on cores 0-1 with no quota (wrk -t$THREADS, hit -p $THREADS): nginx and the generator share the machine's two cores, which bound the req/s."
else
    echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'): 1 worker on core 0, 13-byte static file, loopback."
    echo "Generators on core 1; CPU budget by $CG_NOTE."
fi
[[ $MODE == view ]] && echo "hit-json: --json (no live view); hit-pipe: stdout a file (a plain line a second on stderr); hit-tty: stdout a pseudo-terminal through script (the frame redrawn in place)."
echo "Machine: $(nproc) x $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), shared with other work ($(load_note) at the end)."
echo
python3 "$STATS" loadgen-table "$RESULTS"
echo
echo "Reproduce: benchmarks/loadgen.sh --mode $MODE --runs $RUNS --duration $DURATION --conns $CONNS --tools \"$TOOLS\""
echo "Per-tool commands (each inside its cgroup, under taskset -c $GEN_CPUS):"
for tool in $TOOLS; do
    cmd_for "$tool"
    printf '    '
    printf '%q ' "${CMD[@]}"
    echo
done
echo "Raw outputs: $RAW/, one JSON line per run: $RESULTS"
