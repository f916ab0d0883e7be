#!/usr/bin/env bash
# End-to-end no-op jobs/s through PostgreSQL: hitd (one intake, `hitd --workers 0`, and 1 or 2
# `hitd worker` processes) against pgqueuer and procrastinate with 1 or 2 worker processes.
#
#   benchmarks/pg.sh [--runs 3] [--jobs 50000] [--concurrency 64] [--systems "hitd pgqueuer procrastinate"]
#
# Every run gets a fresh database on the server at $HITD_PG_URL (default
# postgresql://postgres@127.0.0.1:5432, the machine's own), dropped afterwards. The clock starts
# at the first enqueue and stops when the last job is done (benchmarks/pg_queues.py says how
# each system is driven and how "done" is read). hitd's jobs arrive over loopback HTTP (POST
# /jobs arrays of 1,000) and are committed before the 202; pgqueuer's and procrastinate's are
# enqueued by their own library calls in batches of 1,000 (procrastinate: --jobs / 10, it is
# two orders of magnitude slower). --concurrency: jobs at once per worker process, the same for
# all. pgqueuer and procrastinate run from their own venv (benchmarks/out/pgvenv, pinned
# versions, made on first use with pip). Runs are interleaved; medians of --runs. Not pinned to
# cores: PostgreSQL shares the machine with the workers. Loopback only; each run is bounded
# (pg_queues.py --timeout). Not part of the test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

RUNS=3
JOBS=50000
CONC=64
SYSTEMS="hitd pgqueuer procrastinate"
while [[ $# -gt 0 ]]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --systems) SYSTEMS=$2; shift 2 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "pg.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]?$ ]] || { echo "pg.sh: --runs takes 1..99" >&2; exit 2; }
[[ $JOBS =~ ^[1-9][0-9]*000$ ]] && ((JOBS <= 1000000)) ||
    { echo "pg.sh: --jobs takes a multiple of 1000 up to 1000000, e.g. --jobs 50000" >&2; exit 2; }
[[ $CONC =~ ^[1-9][0-9]{0,3}$ ]] || { echo "pg.sh: --concurrency takes 1..9999" >&2; exit 2; }
for s in $SYSTEMS; do
    [[ $s == hitd || $s == pgqueuer || $s == procrastinate ]] ||
        { echo "pg.sh: --systems takes hitd, pgqueuer and procrastinate (got $s)" >&2; exit 2; }
done

PG_URL=${HITD_PG_URL:-postgresql://postgres@127.0.0.1:5432}
PG_DB=
need_venv
command -v psql >/dev/null || die "pg.sh needs psql (apt-get install postgresql-client)"
psql "$PG_URL/postgres" -qXc "SELECT 1" >/dev/null 2>&1 || die "no PostgreSQL answers at $PG_URL (set HITD_PG_URL)"
PGVENV="$OUT_DIR/pgvenv"
if [[ " $SYSTEMS " == *" pgqueuer "* || " $SYSTEMS " == *" procrastinate "* ]] &&
    [[ ! -f $PGVENV/.installed ]]; then
    log "making $PGVENV (pgqueuer 1.6.0, procrastinate 3.10.0, asyncpg)"
    "$PY" -m venv "$PGVENV"
    "$PGVENV/bin/pip" install -q pgqueuer==1.6.0 procrastinate==3.10.0 asyncpg >&2 ||
        die "pip install into $PGVENV failed"
    touch "$PGVENV/.installed"
fi
TMP_DIR=$(mktemp -d)
export PG_BENCH_OUT=$TMP_DIR
RESULTS="$OUT_DIR/pg-$(date -u +%Y%m%dT%H%M%SZ).txt"
log "$(load_note); $JOBS jobs a run, $CONC at once per worker process; raw rows in $RESULTS"

run_one() { # run_one SYSTEM PROCESSES -> appends "SYSTEM PROCESSES JOBS SECONDS JOBS_PER_S"
    local system=$1 procs=$2 jobs=$JOBS py=$PGVENV/bin/python
    if [[ $system == procrastinate ]]; then
        jobs=$((JOBS / 10 / 1000 * 1000))
        if ((jobs < 1000)); then jobs=1000; fi
    fi
    if [[ $system == hitd ]]; then py=$PY; fi
    PG_DB="hitpool_pg_$$_$RANDOM"
    psql "$PG_URL/postgres" -qXc "CREATE DATABASE $PG_DB" >/dev/null || die "CREATE DATABASE failed"
    "$py" "$BENCH_DIR/pg_queues.py" "$system" --url "$PG_URL/$PG_DB" --jobs "$jobs" \
        --workers "$procs" --concurrency "$CONC" --hitd-python "$PY" --timeout 300 |
        tee -a "$RESULTS" >&2 || log "$system x$procs failed (see $TMP_DIR/*.log)"
    psql "$PG_URL/postgres" -qXc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true
    PG_DB=
}

for r in $(seq "$RUNS"); do
    for procs in 1 2; do
        for s in $SYSTEMS; do
            log "run $r/$RUNS: $s with $procs worker process(es)"
            run_one "$s" "$procs"
        done
    done
done

# The table: median jobs/s per system and process count, and hitd's ratio to each other.
"$PY" - "$RESULTS" <<'PYEOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
med = {}
for system, procs, jobs, seconds, rate in rows:
    med.setdefault((system, int(procs)), []).append(float(rate))
print(f"{'system':<15}{'processes':>10}{'runs':>6}{'jobs/s (median)':>18}{'hitd x':>9}")
for (system, procs), rates in sorted(med.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    m = statistics.median(rates)
    h = med.get(("hitd", procs))
    ratio = "" if system == "hitd" or not h else f"{statistics.median(h) / m:.1f}"
    print(f"{system:<15}{procs:>10}{len(rates):>6}{m:>18,.0f}{ratio:>9}")
hitd = [statistics.median(v) for (s, _), v in med.items() if s == "hitd"]
if hitd:
    print(f"hitd, best median: {max(hitd) * 60:,.0f} jobs a minute end to end")
PYEOF
