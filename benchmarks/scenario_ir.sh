#!/usr/bin/env bash
# Instructions per request of `hit -f` on scenarios.sh's two-step flow (POST /login, then GET
# /items/1 with the token), and of hit's single-URL mode on GET /items/1: a count this shared
# machine's noise barely moves (about 1 % from run to run), where timed runs swing by 2x.
#
#   benchmarks/scenario_ir.sh [--iterations 4000] [--src DIR]...
#
# For each source tree (default: this checkout's src/; --src several times compares trees in
# one run), hit runs under `valgrind --tool=callgrind` for --iterations/2 and for --iterations
# iterations of the flow (-c 50, the closed model), against one nginx on loopback, and the
# script prints (Ir(N) - Ir(N/2)) / (N/2 iterations x 2 requests): what one more request costs
# in hit's process, start-up cancelled out (the kernel's socket calls are outside the count).
# Then the same for the single-URL mode with as many requests: the ceiling the scenario mode
# is compared with. About 1 minute per tree on a quiet machine; loopback only.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

ITER=4000
SRCS=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --iterations) ITER=$2; shift 2 ;;
    --src) SRCS+=("$(cd "$2" && pwd)"); shift 2 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "scenario_ir.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $ITER =~ ^[0-9]+$ ]] && ((ITER >= 200 && ITER <= 100000 && ITER % 2 == 0)) ||
    { echo "scenario_ir.sh: --iterations takes an even number from 200 to 100000" >&2; exit 2; }
((${#SRCS[@]})) || SRCS=("$ROOT_DIR/src")
for src in "${SRCS[@]}"; do
    [[ -f $src/hitpool/hit/__main__.py ]] || { echo "scenario_ir.sh: --src $src holds no hitpool/hit" >&2; exit 2; }
done
need_venv
need_apt valgrind valgrind
need_apt nginx nginx
TMP_DIR=$(mktemp -d /tmp/hitpool-scenario-ir.XXXXXX)
chmod 755 "$TMP_DIR"
PORT=$(python3 "$STATS" freeport)
mkdir -p "$TMP_DIR/logs"
cat >"$TMP_DIR/nginx.conf" <<CONF
daemon off;
worker_processes 1;
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
    }
}
CONF
nginx -p "$TMP_DIR" -e "$TMP_DIR/logs/error.log" -c "$TMP_DIR/nginx.conf" &
own_pid $!
BASE="http://127.0.0.1:$PORT"
python3 "$STATS" wait-http "$BASE/login?user=u1" 10 || die "nginx did not start: $(cat "$TMP_DIR/logs/error.log")"
cat >"$TMP_DIR/flow.py" <<'FLOW'
from hitpool.hit import scenario


@scenario
async def shop(s):
    r = await s.post("/login?user=u1", json={"user": "u1"}, name="login")
    s.headers["Authorization"] = "Bearer " + r.json()["token"]
    r = await s.get("/items/1", name="item")
FLOW

count() { # count SRC MODE N -> the Ir of one hit run: N iterations of the flow, or 2N requests
    local src=$1 mode=$2 n=$3 out
    out=$(mktemp "$TMP_DIR/cg.XXXXXX")
    local args=(-f "$TMP_DIR/flow.py" -n "$n" -c 50 --json "$BASE")
    [[ $mode == url ]] && args=(-n $((2 * n)) -c 50 --json -H "Authorization: Bearer tok-u1" "$BASE/items/1")
    # byte code cached under TMP_DIR (never in the tree), so both runs import alike
    PYTHONPATH=$src PYTHONPYCACHEPREFIX=$TMP_DIR/pyc PYTHONDONTWRITEBYTECODE= \
        valgrind --tool=callgrind --callgrind-out-file="$out" "$PY" -m hitpool.hit "${args[@]}" \
        >"$out.json" 2>"$out.err" || die "hit failed against $src: $(tail -3 "$out.err")"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(d["errors"] != 0)' "$out.json" ||
        die "hit counted errors against $src (see $out.json)"
    awk '/^summary:/{print $2}' "$out"
}

log "instructions per request, $ITER iterations of 2 requests (valgrind $(valgrind --version | cut -d- -f2))"
for src in "${SRCS[@]}"; do
    for mode in f url; do
        count "$src" "$mode" 10 >/dev/null # warm the byte-code cache
        half=$(count "$src" "$mode" $((ITER / 2)))
        full=$(count "$src" "$mode" "$ITER")
        label="hit -f (two-step flow)"
        [[ $mode == url ]] && label="hit single-URL"
        echo "$src: $label: $(((full - half) / ITER)) instructions per request (Ir $half, $full)"
    done
done
