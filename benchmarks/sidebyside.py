#!/usr/bin/env python3
"""Side by side: the same command on two source trees, interleaved, medians and the ratio.

    benchmarks/sidebyside.py [--base /work/base/src] [--new src] [--runs 5]
                             [--what demo,hit,hitd] [--jobs 200000] [--duration 3] [--conns 50]

Each tree runs with the project's venv (`.venv/bin/python`, `.venv/bin/hit`, `.venv/bin/hitd`)
and PYTHONPATH=<tree>, so the tree's `hitpool` wins over the installed one, in the processes
it spawns too. A round runs every --what on both trees, base first in odd rounds and new first
in even ones, so drift on a shared machine falls on both and neither always goes first.

- demo: `python -m hitpool.demo --jobs N` end to end (hitd on its durable store, the jobs sent
  in batches, run, and counted). Metrics: end-to-end jobs/s (from its "jobs/minute end to
  end" line) and the intake's jobs/s (its "sent in" line); a run that reports a lost job
  stops the script. Not pinned: it is `make demo` as a user runs it.
- hit: the tree's `hit -z D -c C --json` against one nginx (1 worker on core 0, a 13-byte
  file, as in loadgen.sh), hit on core 1 under a CPU quota of half a core when a cgroup can
  be made (else a full core, said in the header). Metric: req/s; hit's count is checked
  against nginx's stub_status count.
- hitd: the tree's hitd on core 0 (a fresh temp dir, its default SQLite store, 16 workers, a
  queue of 1,000,000), loaded by the *new* tree's hit on core 1 (the same generator for both)
  with single-job POST /jobs for D seconds. Metric: accepted jobs/s; the client's count is
  checked against the server's /stats `accepted`.

Prints a markdown table: per metric, each tree's median and range, new / base of the medians
and the median of the per-round ratios (paired: the two runs of a round ran minutes apart at
most), then the exact command. Raw outputs go to benchmarks/out/sidebyside-<stamp>/.
Bounded: runs x (demo + hit + hitd) x 2 trees, about 2 minutes with the defaults; loopback
only; every process it starts is ended by its pid, every cgroup removed. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = ROOT / ".venv" / "bin"
OUT = BENCH / "out"
WHATS = ("demo", "hit", "hitd")
JOB = b'{"task":"hello","args":{"name":"bench"}}'


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S", time.gmtime()), msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: bytes = resp.read()
        return body


def wait_http(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            get(url)
            return True
        except OSError:
            time.sleep(0.05)
    return False


def stop(proc: subprocess.Popen[Any]) -> None:
    """TERM, 5 s, then KILL: only ever a process this script started."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- CPU quota ---------------------------------------------------------------------------------


class Quota:
    """A cgroup with a CPU quota (v2 cpu.max, else v1 cpu.cfs_quota_us), or none if neither
    can be made here; `preexec` moves the child into it before it runs."""

    def __init__(self, name: str, cores: float) -> None:
        self.path: Path | None = None
        self.note = "no quota (cgroups unusable here): a full core"
        quota = str(int(cores * 100000))
        v2, v1 = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/cpu")
        try:
            if (v2 / "cgroup.controllers").exists() and "cpu" in (
                v2 / "cgroup.subtree_control"
            ).read_text().split():
                p = v2 / name
                p.mkdir()
                (p / "cpu.max").write_text(f"{quota} 100000")
                self.path, self.note = p, f"{cores} core (cgroup v2 cpu.max)"
            elif (v1 / "cpu.cfs_quota_us").exists():
                p = v1 / name
                p.mkdir()
                (p / "cpu.cfs_period_us").write_text("100000")
                (p / "cpu.cfs_quota_us").write_text(quota)
                self.path, self.note = p, f"{cores} core (cgroup v1 cpu.cfs_quota_us)"
        except OSError as e:
            self.note = f"no quota ({e}): a full core"

    def preexec(self) -> None:
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        if self.path is None:
            return
        for pid in (self.path / "cgroup.procs").read_text().split():
            os.kill(int(pid), signal.SIGKILL)  # only ours: a child we moved in, left behind
        for _ in range(20):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


# --- one run of each kind ------------------------------------------------------------------------

Run = Callable[[str, Path], dict[str, float]]


def env_for(tree: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": tree}


_E2E = re.compile(r"wall time: ([0-9.]+) s \(([0-9,]+) jobs/minute end to end\)")
_SENT = re.compile(r"sent in ([0-9.]+) s: ([0-9,]+) jobs accepted \(([0-9,]+) jobs/s")
_LOST = re.compile(r"^lost:\s+([0-9,]+)", re.M)


def run_demo(tree: str, raw: Path, jobs: int) -> dict[str, float]:
    cmd = [str(VENV / "python"), "-m", "hitpool.demo", "--jobs", str(jobs)]
    p = subprocess.run(cmd, env=env_for(tree), capture_output=True, text=True, timeout=600)
    raw.write_text(p.stdout + p.stderr)
    e2e, sent, lost = _E2E.search(p.stdout), _SENT.search(p.stdout), _LOST.search(p.stdout)
    if p.returncode != 0 or e2e is None or sent is None or lost is None:
        sys.exit(f"sidebyside: the demo on {tree} failed (exit {p.returncode}), see {raw}")
    if int(lost.group(1).replace(",", "")) != 0:
        sys.exit(f"sidebyside: the demo on {tree} lost jobs, see {raw}")
    return {
        "demo end-to-end jobs/s": int(e2e.group(2).replace(",", "")) / 60,
        "demo intake jobs/s": float(sent.group(3).replace(",", "")),
    }


@contextmanager
def nginx(tmp: Path) -> Iterator[tuple[str, Callable[[], int]]]:
    """nginx with one worker on core 0 serving a 13-byte file; yields (url, request count)."""
    port = free_port()
    (tmp / "www").mkdir()
    (tmp / "www" / "index.html").write_text("hello, world\n")
    tmp.chmod(0o755)
    for d in (tmp / "www", tmp / "www" / "index.html"):
        d.chmod(0o755 if d.is_dir() else 0o644)
    temps = " ".join(
        f"{k}_temp_path {tmp}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp / "nginx.conf").write_text(
        f"daemon off; worker_processes 1; worker_cpu_affinity 01; pid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/error.log warn; events {{ worker_connections 4096; }}\n"
        f"http {{ access_log off; keepalive_requests 100000000; {temps}\n"
        f"  server {{ listen 127.0.0.1:{port}; root {tmp}/www;\n"
        f"    location = /nginx_status {{ stub_status; }} }} }}\n"
    )
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            "nginx",
            "-p",
            str(tmp),
            "-e",
            f"{tmp}/error.log",
            "-c",
            f"{tmp}/nginx.conf",
        ]
    )
    status = f"http://127.0.0.1:{port}/nginx_status"

    def count() -> int:
        # "server accepts handled requests" then the three numbers; the status request counts too.
        return int(get(status).decode().splitlines()[2].split()[2])

    try:
        if not wait_http(status, 10):
            sys.exit(f"sidebyside: nginx did not start: {(tmp / 'error.log').read_text()}")
        yield f"http://127.0.0.1:{port}/index.html", count
    finally:
        stop(proc)


def hit_json(out: str) -> dict[str, Any]:
    start = out.find("{")
    if start < 0:
        raise ValueError("no JSON in hit's output")
    obj: dict[str, Any] = json.loads(out[start:])
    return obj


def run_hit(
    tree: str,
    raw: Path,
    url: str,
    count: Callable[[], int],
    quota: Quota,
    duration: int,
    conns: int,
) -> dict[str, float]:
    cmd = [
        "taskset",
        "-c",
        "1",
        str(VENV / "hit"),
        "-z",
        f"{duration}s",
        "-c",
        str(conns),
        "--json",
        url,
    ]
    before = count()
    p = subprocess.run(
        cmd,
        env=env_for(tree),
        capture_output=True,
        text=True,
        timeout=duration + 30,
        preexec_fn=quota.preexec,
    )
    seen = count() - before - 1
    raw.write_text(p.stdout + p.stderr)
    try:
        o = hit_json(p.stdout)
    except ValueError:
        sys.exit(f"sidebyside: hit on {tree} printed no JSON (exit {p.returncode}), see {raw}")
    if int(o["requests"]) != seen:
        log(f"hit on {tree}: counted {o['requests']}, nginx saw {seen}")
    return {"hit req/s": float(o["rps"])}


def run_hitd(tree: str, raw: Path, new_tree: str, duration: int, conns: int) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hitpool-sbs-hitd.") as d:
        server = subprocess.Popen(
            [
                *("taskset", "-c", "0", str(VENV / "hitd"), "--port", str(port)),
                *("--workers", "16", "--queue-size", "1000000"),
                *("--log-level", "warning", "--grace", "1"),
            ],
            cwd=d,
            env=env_for(tree),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            if not wait_http(base + "/healthz", 15):
                sys.exit(f"sidebyside: hitd on {tree} did not answer /healthz within 15 s")
            before = json.loads(get(base + "/stats"))["accepted"]
            body = Path(d) / "job.json"
            body.write_bytes(JOB)
            cmd = ["taskset", "-c", "1", str(VENV / "hit"), "-z", f"{duration}s", "-c", str(conns)]
            cmd += ["-m", "POST", "-d", f"@{body}", "-H", "Content-Type: application/json"]
            cmd += ["--json", base + "/jobs"]
            p = subprocess.run(
                cmd, env=env_for(new_tree), capture_output=True, text=True, timeout=duration + 30
            )
            raw.write_text(p.stdout + p.stderr)
            accepted = json.loads(get(base + "/stats"))["accepted"] - before
        finally:
            stop(server)
    o = hit_json(p.stdout)
    if int(o["successes"]) != accepted:
        log(f"hitd on {tree}: client counted {o['successes']} accepted, server {accepted}")
    return {"hitd single-POST jobs/s": int(o["successes"]) / float(o["duration_s"])}


# --- the table ---------------------------------------------------------------------------------


def fmt(v: float) -> str:
    return f"{v:,.0f}"


def table(results: dict[str, dict[str, list[float]]], rounds: list[dict[str, float]]) -> str:
    lines = [
        "| metric | runs | base median | base min-max | new median | new min-max "
        "| new / base (medians) | new / base (median of paired rounds) | per-round ratios |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for metric, by in results.items():
        b, n = by["base"], by["new"]
        paired = [r[metric] for r in rounds if metric in r]
        lines.append(
            f"| {metric} | {len(b)} | {fmt(statistics.median(b))} | {fmt(min(b))}-{fmt(max(b))} "
            f"| {fmt(statistics.median(n))} | {fmt(min(n))}-{fmt(max(n))} "
            f"| {statistics.median(n) / statistics.median(b):.2f}x "
            f"| {statistics.median(paired):.2f}x | {', '.join(f'{x:.2f}' for x in paired)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="sidebyside.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    ap.add_argument(
        "--base", default="/work/base/src", help="the old tree's src (default %(default)s)"
    )
    ap.add_argument("--new", default=str(ROOT / "src"), help="the new tree's src (default ./src)")
    ap.add_argument("--runs", type=int, default=5, help="rounds, 1..99 (default 5)")
    ap.add_argument("--what", default="demo,hit,hitd", help="any of demo,hit,hitd (default all)")
    ap.add_argument("--jobs", type=int, default=200_000, help="demo --jobs (default 200000)")
    ap.add_argument("--duration", type=int, default=3, help="seconds of hit per run, 1..60")
    ap.add_argument("--conns", type=int, default=50, help="hit -c (default 50)")
    a = ap.parse_args(argv)
    whats = [w for w in a.what.split(",") if w]
    usage = None
    if not whats or any(w not in WHATS for w in whats):
        usage = f"--what takes a comma-separated list of {','.join(WHATS)} (got {a.what!r})"
    elif not 1 <= a.runs <= 99:
        usage = "--runs takes 1..99"
    elif not 1 <= a.duration <= 60:
        usage = "--duration takes whole seconds 1..60"
    elif not 1 <= a.conns <= 9999:
        usage = "--conns takes 1..9999"
    elif not 1000 <= a.jobs <= 10_000_000:
        usage = "--jobs takes 1000..10000000"
    for flag, tree in (("--base", a.base), ("--new", a.new)):
        if usage is None and not (Path(tree) / "hitpool" / "__init__.py").is_file():
            usage = f"{flag} {tree}: no hitpool package there; give a tree's src directory"
    if usage is None and not (VENV / "python").exists():
        usage = f"no project venv at {VENV}: run make .venv/.installed first"
    if usage is None and "hit" in whats and shutil.which("nginx") is None:
        usage = "--what hit needs nginx (apt-get install nginx) or leave hit out of --what"
    if usage is None and os.cpu_count() is not None and os.cpu_count() < 2:  # type: ignore[operator]
        usage = "needs 2 cores (server on core 0, generator on core 1)"
    if usage is not None:
        print(f"sidebyside.py: {usage}", file=sys.stderr)
        return 2
    trees = {"base": str(Path(a.base).resolve()), "new": str(Path(a.new).resolve())}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    raw_dir = OUT / f"sidebyside-{stamp}"
    raw_dir.mkdir(parents=True)
    results: dict[str, dict[str, list[float]]] = {}
    rounds: list[dict[str, float]] = []
    quota = Quota(f"hitpool-sbs-{os.getpid()}", 0.5) if "hit" in whats else None
    tmp = Path(tempfile.mkdtemp(prefix="hitpool-sbs."))
    try:
        with nginx(tmp) if "hit" in whats else _nothing() as (url, count):
            log(
                f"{a.runs} rounds of [{','.join(whats)}] "
                f"on base {trees['base']} and new {trees['new']}"
            )
            for r in range(1, a.runs + 1):
                order = ("base", "new") if r % 2 else ("new", "base")
                got: dict[str, dict[str, float]] = {"base": {}, "new": {}}
                for what in whats:
                    for side in order:
                        raw = raw_dir / f"{what}-{side}-{r}.out"
                        if what == "demo":
                            m = run_demo(trees[side], raw, a.jobs)
                        elif what == "hit":
                            assert quota is not None
                            m = run_hit(trees[side], raw, url, count, quota, a.duration, a.conns)
                        else:
                            m = run_hitd(trees[side], raw, trees["new"], a.duration, a.conns)
                        got[side].update(m)
                        log(
                            f"round {r} {what} {side}: "
                            + ", ".join(f"{k} {fmt(v)}" for k, v in m.items())
                        )
                ratio = {}
                for metric, v in got["new"].items():
                    results.setdefault(metric, {"base": [], "new": []})
                    results[metric]["base"].append(got["base"][metric])
                    results[metric]["new"].append(v)
                    ratio[metric] = v / got["base"][metric]
                rounds.append(ratio)
    finally:
        if quota is not None:
            quota.remove()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"## Side by side, {a.runs} interleaved rounds, base {trees['base']} vs new {trees['new']}"
    )
    print()
    print(
        f"Machine: {os.cpu_count()} cores, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end."
    )
    if "hit" in whats and quota is not None:
        print(
            f"hit: nginx 1 worker on core 0; hit on core 1 at {quota.note}; "
            f"{a.duration} s, -c {a.conns}."
        )
    if "hitd" in whats:
        print(
            f"hitd: on core 0, SQLite FULL in a fresh dir; the new tree's hit on core 1, "
            f"{a.duration} s, -c {a.conns}, one job per POST."
        )
    if "demo" in whats:
        print(f"demo: python -m hitpool.demo --jobs {a.jobs}, unpinned.")
    print()
    print(table(results, rounds))
    print()
    print(
        f"Reproduce: benchmarks/sidebyside.py --base {a.base} --new {a.new} --runs {a.runs} "
        f"--what {','.join(whats)} --jobs {a.jobs} --duration {a.duration} --conns {a.conns}"
    )
    print(f"Raw outputs: {raw_dir}/")
    return 0


@contextmanager
def _nothing() -> Iterator[tuple[str, Callable[[], int]]]:
    yield "", lambda: 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
