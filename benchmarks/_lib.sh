# Shared helpers for loadgen.sh and intake.sh (sourced, not run).
#
# What it gives: log/die, a registry of the processes and cgroups this script started (and a
# cleanup that ends exactly those, by pid), a CPU-budget wrapper (cgroup v2 cpu.max, else the
# cgroup v1 cpu controller's CFS quota, else taskset alone, and it says which), and `measure`,
# which runs one command pinned and budgeted under /usr/bin/time so every row carries its CPU use.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$BENCH_DIR/.." && pwd)"
OUT_DIR="$BENCH_DIR/out"
# The compiled build (make's .venv-compiled), or the pure one (.venv) with HITPOOL_PURE=1.
if [[ ${HITPOOL_PURE:-} == 1 ]]; then VENV_NAME=.venv; else VENV_NAME=.venv-compiled; fi
VENV_BIN="$ROOT_DIR/$VENV_NAME/bin"
PY="$VENV_BIN/python"
STATS="$BENCH_DIR/_stats.py"
mkdir -p "$OUT_DIR"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- processes and cgroups we own ---------------------------------------------------------------
OWNED_PIDS=()
OWNED_CGROUPS=()
TMP_DIR=""

own_pid() { OWNED_PIDS+=("$1"); }

stop_pid() { # stop_pid PID: TERM, wait up to 5 s, then KILL; only ever a pid we started
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid cg
    for pid in "${OWNED_PIDS[@]}"; do stop_pid "$pid"; done
    for cg in "${OWNED_CGROUPS[@]}"; do
        # Anything still inside was started by us through cg_exec; end it by pid, then remove.
        if [[ -f "$cg/cgroup.procs" ]]; then
            while read -r pid; do [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null; done <"$cg/cgroup.procs"
            for _ in $(seq 20); do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
        fi
    done
    [[ -n $TMP_DIR && -d $TMP_DIR ]] && rm -rf "$TMP_DIR"
    # A database a script created for a run (intake.sh's hitd-pg), if it stopped mid-run.
    if [[ -n ${PG_DB:-} ]]; then
        psql "$PG_URL/postgres" -qXc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- CPU budget -----------------------------------------------------------------------------------
# CG_MODE is v2, v1 or none. cgroup v2 is preferred (cpu.max); this machine's /sys/fs/cgroup may be
# the v1 layout with a separate cpu controller, whose CFS quota enforces the same budget.
CG_MODE=none
CG_NOTE=""
cg_detect() {
    if [[ $(stat -fc %T /sys/fs/cgroup 2>/dev/null) == cgroup2fs && -w /sys/fs/cgroup ]] &&
        grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
        # Enabling +cpu for children of the root is allowed even with processes in the root.
        grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control ||
            echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
        if grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control; then
            CG_MODE=v2
            CG_NOTE="cgroup v2 cpu.max"
            return
        fi
    fi
    if [[ $(stat -fc %T /sys/fs/cgroup/cpu 2>/dev/null) == cgroupfs && -w /sys/fs/cgroup/cpu &&
        -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]]; then
        CG_MODE=v1
        CG_NOTE="cgroup v1 cpu controller (cpu.cfs_quota_us), /sys/fs/cgroup is not cgroup2"
        return
    fi
    CG_MODE=none
    CG_NOTE="NO CPU QUOTA: cgroups unusable here, generators only pinned with taskset (a full core each)"
}

# cg_make NAME QUOTA_US PERIOD_US -> sets CG_DIR to the new cgroup ("" when CG_MODE=none).
# (A variable, not output: $(cg_make) would run in a subshell and lose the cleanup registration.)
cg_make() {
    local name="hitpool-bench-$$-$1" quota=$2 period=$3 dir
    case $CG_MODE in
    v2)
        dir="/sys/fs/cgroup/$name"
        mkdir "$dir" && echo "$quota $period" >"$dir/cpu.max"
        ;;
    v1)
        dir="/sys/fs/cgroup/cpu/$name"
        mkdir "$dir" && echo "$period" >"$dir/cpu.cfs_period_us" && echo "$quota" >"$dir/cpu.cfs_quota_us"
        ;;
    *) dir="" ;;
    esac
    [[ -n $dir ]] && OWNED_CGROUPS+=("$dir")
    CG_DIR=$dir
}

# cg_throttled CGDIR -> "periods throttled" counters, to show the quota did bite
cg_throttled() {
    [[ -n $1 && -f $1/cpu.stat ]] || { echo "- -"; return; }
    awk '/^nr_periods/{p=$2} /^nr_throttled/{t=$2} END{print p+0, t+0}' "$1/cpu.stat"
}

# cg_exec CGDIR CPULIST CMD... : run CMD (exec, in the foreground) inside CGDIR pinned to CPULIST.
cg_exec() {
    local cg=$1 cpus=$2
    shift 2
    if [[ -n $cg ]]; then
        sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cg" taskset -c "$cpus" "$@"
    else
        taskset -c "$cpus" "$@"
    fi
}

# measure TIMEFILE CGDIR CPULIST CMD... : like cg_exec, with /usr/bin/time writing
# "elapsed user sys" to TIMEFILE, and `timeout` ending a generator that outlives
# MEASURE_LIMIT_S seconds (default 60: every run has a duration, a hung tool must not hang us).
measure() {
    local tf=$1 cg=$2 cpus=$3
    shift 3
    cg_exec "$cg" "$cpus" /usr/bin/time -o "$tf" -f '%e %U %S' \
        timeout --foreground --kill-after=5 "${MEASURE_LIMIT_S:-60}" "$@"
}

# cpu_cores TIMEFILE -> CPU seconds / wall seconds, e.g. 0.50
cpu_cores() { awk 'END{ if ($1 > 0) printf "%.2f", ($2 + $3) / $1; else print "null" }' "$1" 2>/dev/null || echo null; }

# load_note: the machine is shared; record what else was running at measurement time.
load_note() { echo "load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"; }

need_venv() {
    # make rebuilds the compiled venv when a source changed since its build.
    make -C "$ROOT_DIR" "$VENV_NAME/.installed" >&2 || die "make $VENV_NAME/.installed failed"
    log "build: $("$PY" -c 'from hitpool._build import build; print(build())')"
}

need_apt_file() { # need_apt_file PATH PACKAGE...: for a library or header rather than a binary
    local path=$1
    shift
    [[ -e $path ]] && return 0
    log "installing $* with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 || die "apt-get install $* failed"
}

need_apt() { # need_apt BINARY PACKAGE...
    local bin=$1
    shift
    command -v "$bin" >/dev/null 2>&1 && return 0
    log "installing $* with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 || die "apt-get install $* failed"
}

# busy_cores SECONDS -> CPU the whole machine used over SECONDS, in cores (e.g. 0.12)
busy_cores() {
    local a b
    a=$(awk '/^cpu /{print $2+$3+$4+$6+$7+$8, $5}' /proc/stat)
    sleep "$1"
    b=$(awk '/^cpu /{print $2+$3+$4+$6+$7+$8, $5}' /proc/stat)
    awk -v a="$a" -v b="$b" -v s="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN{
        split(a, x, " "); split(b, y, " "); printf "%.2f", (y[1] - x[1]) / hz / s }'
}

# quiet_wait: the machine is shared with other engineers' tests. Before a measurement, wait (at
# most QUIET_MAX_S, default 20 s, and at most QUIET_BUDGET_S, default 240 s, over the whole script
# so it stays bounded) until the rest of the machine uses under QUIET_CORES (default 0.25) of a
# core; sets BUSY_BEFORE to the last sample so every run records what it ran beside.
QUIET_SPENT=0
quiet_wait() {
    local start=$SECONDS
    local deadline=$((SECONDS + ${QUIET_MAX_S:-20}))
    local budget_end=$((SECONDS + ${QUIET_BUDGET_S:-240} - QUIET_SPENT))
    ((budget_end < deadline)) && deadline=$budget_end
    while :; do
        BUSY_BEFORE=$(busy_cores 0.5)
        awk -v b="$BUSY_BEFORE" -v t="${QUIET_CORES:-0.25}" 'BEGIN{exit !(b < t)}' && break
        if ((SECONDS >= deadline)); then
            log "machine still busy (${BUSY_BEFORE} cores used by others): measuring anyway"
            break
        fi
        sleep 1
    done
    QUIET_SPENT=$((QUIET_SPENT + SECONDS - start))
}
