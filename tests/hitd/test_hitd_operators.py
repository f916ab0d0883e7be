"""What an operator can do to hitd's store, and what hitd answers (issue 10, findings 10, 11):
a SQLite database deleted under a running server, a malformed PostgreSQL URL, PostgreSQL
connections terminated under the store."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hitd import _store_fixtures as _pg
from hitd._helpers import wait_for
from hitpool import SpecError
from hitpool.hitd import StoreUnavailable
from hitpool.hitd.store import Store

pg_url = _pg.pg_url  # the session fixture, registered in this module

JSON = {"Content-Type": "application/json"}


async def test_a_deleted_sqlite_database_is_503_and_fails_healthz(
    start_hitd: Any, connect: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    hitd = await start_hitd(store=f"sqlite:///{data}/hitd.db")
    c = await connect(hitd.port)
    assert (await c.request("POST", "/jobs", {"task": "hello"}, JSON)).status == 202
    assert (await c.request("GET", "/healthz")).status == 200
    shutil.rmtree(data)  # the operator's mistake, mid-run
    r = await c.request("POST", "/jobs", {"task": "hello"}, JSON)
    assert r.status == 503, r.body  # not a 202 into a deleted inode
    assert "deleted" in r.json()["message"]
    r = await c.request("GET", "/healthz")
    assert r.status == 503 and "deleted" in r.json()["error"]
    assert (await c.request("POST", "/jobs", {"task": "hello"}, JSON)).status == 503


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@127.0.0.1:abc/db",  # a port that is not a number
        "postgresql://u@[::1/db",  # an IPv6 host without its closing bracket
        "postgresql://u:secret@127.0.0.1:99999/db",  # a port out of range
    ],
)
def test_a_malformed_postgresql_url_is_exit_2_naming_store(url: str, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as e:
        Store.from_url(url)
    assert e.value.field == "store" and "secret" not in str(e.value)
    proc = subprocess.run(
        [sys.executable, "-m", "hitpool.hitd", "--store", url, "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )
    assert proc.returncode == 2, proc.stderr
    assert "--store" in proc.stderr and "Traceback" not in proc.stderr
    assert "secret" not in proc.stderr


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[Store]:
    async with _pg.fresh_schema(pg_url) as url:
        s = Store.from_url(url)
        await s.open()
        yield s
        await s.close()


@pytest.mark.postgres
async def test_terminated_postgresql_connections_are_store_unavailable(
    pg_store: Store, pg_url: str
) -> None:
    from hitpool.hitd.store.postgresql import PostgreSQLStore, _store_error

    assert isinstance(pg_store, PostgreSQLStore)
    # A statement under way when its backend is terminated (found by a marker of its own:
    # other tests share the server).
    marker = f"hitd-test-{os.getpid()}-{id(pg_store)}"
    under_way = asyncio.create_task(pg_store._one("fetchval", f"SELECT pg_sleep(10) -- {marker}"))
    admin = await asyncpg.connect(pg_url)
    try:

        async def terminated() -> bool:
            return bool(
                await admin.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
                    f"%{marker}",
                )
            )

        await wait_for(terminated, timeout=5, what="the statement to reach the server")
    finally:
        await admin.close()
    with pytest.raises(StoreUnavailable) as e:
        await under_way
    assert str(e.value).startswith("PostgreSQL is unavailable: "), e.value
    assert await pg_store.get(1) is None  # and the pool goes on with a new connection
    # What asyncpg raises when the backend dies under a statement, in the same words.
    err = _store_error(asyncpg.InternalClientError("cannot switch to state 15"))
    assert isinstance(err, StoreUnavailable)
    assert str(err) == "PostgreSQL is unavailable: InternalClientError: cannot switch to state 15"
