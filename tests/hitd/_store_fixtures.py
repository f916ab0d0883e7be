"""PostgreSQL for the store tests: the server on $HITPOOL_TEST_PG_URL (default: the local
one, trust auth), or, when none answers, our own (initdb + pg_ctl in a temporary directory
on a free loopback port). Under CI=true a missing server is a failure, never a skip.

Test modules load this file by path (`load_store_fixtures()` below shows how), since the
tests are imported with --import-mode=importlib and are not a package.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 1.0):
            return True
    except OSError:
        return False


def pg_bindir() -> Path | None:
    found = shutil.which("initdb")
    candidates = [Path(found).parent] if found else []
    candidates += [Path("/usr/local/bin"), *sorted(Path("/usr/lib/postgresql").glob("*/bin"))]
    for d in candidates:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


@contextlib.contextmanager
def own_pg_server() -> Iterator[str]:
    """initdb + pg_ctl in a temporary directory on a free loopback port; stopped after."""
    bindir = pg_bindir()
    if bindir is None:
        raise RuntimeError("no initdb/pg_ctl in PATH, /usr/local/bin or /usr/lib/postgresql/*/bin")
    root = Path(tempfile.mkdtemp(prefix="hitd-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    run = functools.partial(subprocess.run, check=True, capture_output=True, timeout=60)
    try:
        run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"])
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        run(
            [
                *as_user,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                opts,
                "-w",
                "-l",
                str(root / "log"),
                "start",
            ]
        )
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = os.environ.get("HITPOOL_TEST_PG_URL", PG_DEFAULT)
    if answers(url):
        yield url
        return
    try:
        server = own_pg_server()
        started = server.__enter__()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        if IN_CI:  # under CI a missing server is a failure, never a skip
            pytest.fail(f"no PostgreSQL at {url} and could not start one: {e}")
        pytest.skip(f"no PostgreSQL at {url} and could not start one: {e}")
    try:
        yield started
    finally:
        server.__exit__(None, None, None)


@contextlib.asynccontextmanager
async def fresh_schema(pg_url: str) -> AsyncIterator[str]:
    """A store URL with a schema of its own, dropped afterwards."""
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{pg_url}?schema={schema}"
    finally:
        conn = await asyncpg.connect(pg_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
