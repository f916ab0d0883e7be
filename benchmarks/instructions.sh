#!/usr/bin/env bash
# Instructions per single-job POST /jobs in hitd: a count this shared machine's noise does not
# move (timed runs here swing by up to 1.7x from minute to minute; this count by ~0.2 %).
#
#   benchmarks/instructions.sh [--jobs 4000] [--src DIR]... [--venv DIR]...
#
# Each target is a source tree run pure (--src: its hitpool/ on PYTHONPATH) or a venv's
# installed build (--venv: its python, PYTHONPATH unset; .venv-compiled is the compiled
# build). Default: this checkout's src/ and the compiled build of it, so one run compares
# pure and compiled. hitd runs under `valgrind --tool=callgrind` on its default store (SQLite
# FULL, in a fresh temp dir, 16 workers), `hit` sends --jobs/2 and then,
# in a second server, --jobs single-job POSTs (50 connections), and the script prints
# (Ir(jobs) - Ir(jobs/2)) / (jobs/2): the instructions of one more job, start-up cancelled out.
# Every thread counts (the event loop and the SQLite writer), the kernel does not (socket
# calls and fsync are outside the count). Under valgrind the server is ~50x slower, so its
# commits group more jobs than at full speed: compare trees with it, not with a timed run.
# About 2 minutes per tree with the defaults; loopback only.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

JOBS=4000
SRCS=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --jobs) JOBS=$2; shift 2 ;;
    --src) SRCS+=("src:$(cd "$2" && pwd)"); shift 2 ;;
    --venv) SRCS+=("venv:$(cd "$2" && pwd)"); shift 2 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "instructions.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $JOBS =~ ^[0-9]+$ ]] && ((JOBS >= 200 && JOBS <= 100000 && JOBS % 2 == 0)) ||
    { echo "instructions.sh: --jobs takes an even number from 200 to 100000" >&2; exit 2; }
((${#SRCS[@]})) || SRCS=("src:$ROOT_DIR/src" "venv:$ROOT_DIR/.venv-compiled")
for src in "${SRCS[@]}"; do
    case $src in
    src:*) [[ -f ${src#src:}/hitpool/hitd/__main__.py ]] ||
        { echo "instructions.sh: --src ${src#src:} holds no hitpool/hitd" >&2; exit 2; } ;;
    venv:*) [[ -x ${src#venv:}/bin/python || ${src#venv:} == "$ROOT_DIR/.venv-compiled" ]] ||
        { echo "instructions.sh: --venv ${src#venv:} has no bin/python" >&2; exit 2; } ;;
    esac
done
need_venv
need_apt valgrind valgrind
HIT="$VENV_BIN/hit"
BODY=$(mktemp /tmp/hitpool-ir-body.XXXXXX)
echo -n '{"task":"hello","args":{"name":"bench"}}' >"$BODY"

count() { # count TARGET N -> the Ir of a hitd run that served N single-job POSTs
    local target=$1 n=$2 dir port pid py pythonpath
    case $target in
    src:*) py=$PY pythonpath=${target#src:} ;;
    venv:*) py=${target#venv:}/bin/python pythonpath="" ;;
    esac
    dir=$(mktemp -d /tmp/hitpool-ir.XXXXXX)
    port=$(python3 "$STATS" freeport)
    (cd "$dir" && PYTHONPATH=$pythonpath exec valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
        "$py" -m hitpool.hitd --port "$port" --workers 16 --queue-size 1000000 \
        --log-level warning) >"$dir/server.log" 2>&1 &
    pid=$!
    own_pid "$pid"
    python3 "$STATS" wait-http "http://127.0.0.1:$port/healthz" 120 ||
        die "hitd under valgrind did not answer: $(tail -5 "$dir/server.log")"
    "$HIT" -n "$n" -c 50 -t 60s -m POST -d "@$BODY" -H "Content-Type: application/json" \
        "http://127.0.0.1:$port/jobs" >/dev/null 2>"$dir/hit.err" ||
        die "hit failed against $target: $(tail -5 "$dir/hit.err")" # stderr: its progress lines
    # Let the workers finish every accepted job, so the count holds each job's whole life.
    for _ in $(seq 300); do
        python3 "$STATS" get-json "http://127.0.0.1:$port/stats" |
            python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["completed"] < d["accepted"])' && break
        sleep 0.2
    done
    kill -INT "$pid"
    wait "$pid" || true
    awk '/^summary:/{print $2}' "$dir/cg.out"
    rm -rf "$dir"
}

log "instructions per single-job POST, $JOBS jobs (valgrind $(valgrind --version | cut -d- -f2))"
for src in "${SRCS[@]}"; do
    half=$(count "$src" $((JOBS / 2)))
    full=$(count "$src" "$JOBS")
    case $src in
    src:*) what="${src#src:} (pure source)" ;;
    venv:*) what="${src#venv:} ($(PYTHONPATH="" "${src#venv:}/bin/python" -c 'from hitpool._build import build; print(build())') build)" ;;
    esac
    echo "$what: $(((full - half) / (JOBS / 2))) instructions per job (Ir $half for $((JOBS / 2)) jobs, $full for $JOBS)"
done
rm -f "$BODY"
