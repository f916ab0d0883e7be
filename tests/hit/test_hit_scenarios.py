"""hit -f: scenarios against an in-process shop that checks what it receives (tokens,
per-path counts, feeder rows), weights, drops under --max-inflight, failures, the
corrected latency, and the summary's scenario and step keys."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hitpool.hit import Spec, run_async
from hitpool.hit.cli import main
from hitpool.hit.scenario_run import Iterations
from hitpool.hit.script import load_script

from .shop import Shop, shop_in_thread

CHECKOUT = """
from hitpool.hit import scenario, feeder

users = feeder.csv({csv!r})

@scenario(weight=3)
async def checkout(s):
    row = users.next()
    r = await s.post("/login", json={{"user": row["user"]}}, name="login")
    s.headers["Authorization"] = f"Bearer {{r.json()['token']}}"
    r = await s.get(f"/items/{{row['item']}}", name="/items/:id")
    r.expect(200)

@scenario
async def browse(s):
    r = await s.get("/browse", name="browse")
    assert r.headers["CONTENT-TYPE"].startswith("text/html") and r.text == "<html>shop</html>"
"""


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    s = await Shop().start()
    yield s
    await s.stop()


def _script(tmp_path: Path, body: str, **fmt: str) -> str:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body).format(**fmt) if fmt else textwrap.dedent(body))
    return str(path)


def _users(tmp_path: Path, n: int = 3) -> str:
    csv = tmp_path / "users.csv"
    csv.write_text("user,item\n" + "".join(f"u{i},{100 + i}\n" for i in range(n)))
    return str(csv)


async def test_a_two_step_flow_carries_the_token_and_counts_every_step(
    shop: Shop, tmp_path: Path
) -> None:
    script = _script(tmp_path, CHECKOUT, csv=_users(tmp_path))
    s = await run_async(Spec(shop.url, script=script, requests=80, concurrency=5))
    assert shop.bad_tokens == 0  # every item request carried the token its login returned
    # per-path counts on the server equal hit's per-step counts exactly
    assert s.steps["login"]["requests"] == shop.seen["/login"] == 60
    assert s.steps["/items/:id"]["requests"] == shop.seen["/items"] == 60
    assert s.steps["browse"]["requests"] == shop.seen["/browse"] == 20
    assert s.requests == s.successes == sum(shop.seen.values()) == 140
    # the feeder's rows, in turn: each user logged in 20 times and fetched its own item
    assert shop.users == {"u0": 20, "u1": 20, "u2": 20}
    assert shop.pairs == {("u0", "100"): 20, ("u1", "101"): 20, ("u2", "102"): 20}
    sc = s.scenarios
    assert (sc["checkout"]["started"], sc["checkout"]["completed"], sc["checkout"]["failed"]) == (
        60,
        60,
        0,
    )
    assert sc["browse"]["completed"] == 20
    doc = s.to_json()
    assert doc["schema"] == "hit/1" and doc["requests"] == 140
    assert doc["steps"]["login"]["status_codes"] == {"200": 60}
    assert set(doc["scenarios"]["checkout"]) == {
        "started", "completed", "failed", "dropped", "latency_s", "failures"
    }  # fmt: skip
    assert doc["scenarios"]["checkout"]["latency_s"]["max"] > 0


async def test_session_headers_are_per_iteration(shop: Shop, tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        from hitpool.hit import scenario

        @scenario
        async def first(s):
            assert s.headers == {}  # nothing left from the iteration before
            s.headers["X-Seen"] = "yes"
            await s.get("/browse", headers={"X-Own": "1"})
        """,
    )
    s = await run_async(
        Spec(shop.url, script=script, requests=10, concurrency=1, headers=(("X-Run", "r"),))
    )
    assert s.scenarios["first"]["completed"] == 10
    assert all(h["x-seen"] == "yes" and h["x-own"] == "1" and h["x-run"] == "r"
               for h in shop.headers_seen)  # fmt: skip


async def test_weights_hold_exactly_in_the_open_model(shop: Shop, tmp_path: Path) -> None:
    script = _script(tmp_path, CHECKOUT, csv=_users(tmp_path))
    s = await run_async(Spec(shop.url, script=script, rps=2000, requests=400))
    assert s.scenarios["checkout"]["started"] == 300 and s.scenarios["browse"]["started"] == 100
    assert s.target_rps == 2000 and s.dropped == 0
    assert shop.seen["/login"] == 300 and shop.seen["/browse"] == 100


async def test_iterations_due_at_the_cap_are_dropped(shop: Shop, tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        from hitpool.hit import scenario

        @scenario
        async def slow(s):
            await s.get("/slow/60000", name="slow")
        """,
    )
    # 50 iterations due over 250 ms, each waiting for -t, at most 5 in flight
    spec = Spec(shop.url, script=script, rps=200, requests=50, max_inflight=5, timeout=1.0)
    s = await run_async(spec)
    w = s.scenarios["slow"]
    assert w["started"] == 5 and w["dropped"] == 45 and w["failed"] == 5
    assert s.dropped == 45 and shop.seen["/slow"] == 5 == s.steps["slow"]["requests"]
    assert s.to_json()["dropped"] == 45


async def test_a_scenario_that_raises_fails_its_iteration_only(shop: Shop, tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        from hitpool.hit import scenario

        @scenario
        async def broken(s):
            await s.get("/browse", name="browse")
            {}["missing"]

        @scenario
        async def picky(s):
            r = await s.get("/browse", name="picky")
            r.expect(201)
        """,
    )
    s = await run_async(Spec(shop.url, script=script, requests=20, concurrency=2))
    broken, picky = s.scenarios["broken"], s.scenarios["picky"]
    assert broken["failed"] == 10 and broken["completed"] == 0
    assert broken["failures"]["KeyError"]["count"] == 10
    assert '{}["missing"]' in broken["failures"]["KeyError"]["example"]
    assert picky["failures"]["ExpectationFailed"]["count"] == 10
    assert s.steps["browse"]["successes"] == 10  # the request itself was fine
    # a failed expectation fails the step too
    assert s.steps["picky"]["errors"] == 10 and s.steps["picky"]["errors_by_kind"]["expect"] == 10
    assert s.requests == s.successes + s.errors == 20 and s.errors_by_kind["expect"] == 10


async def test_latency_counts_from_the_iterations_due_time(shop: Shop, tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        from hitpool.hit import scenario

        @scenario
        async def two(s):
            await s.get("/browse", name="a")
            await s.get("/browse", name="b")
        """,
    )
    spec = Spec(shop.url, script=script, requests=1)
    it = Iterations(spec, load_script(script), vus=1, iterations=1)
    await it.preflight()
    it.begin(it.clock(), None)
    # an iteration that starts 200 ms after its due time (the generator was stalled)
    await it._iterate(it.mix.pick(0), it.clock() - 200_000_000)
    for step in ("a", "b"):
        assert it.stats.steps[step].hist.min >= 200_000  # µs: the lateness is in each request
    assert it.stats.scenarios["two"].hist.min >= 200_000
    it.stop()
    await it.wait_closed()


async def test_the_run_ends_by_z_plus_t(shop: Shop, tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        from hitpool.hit import scenario

        @scenario
        async def stuck(s):
            await s.get("/browse", name="first")
            await s.get("/slow/5000", name="stuck")
        """,
    )
    spec = Spec(shop.url, script=script, rps=20, duration=0.5, timeout=0.3)
    s = await asyncio.wait_for(run_async(spec), 3)
    w = s.scenarios["stuck"]
    assert w["started"] == 10 and w["failed"] == 10 and w["completed"] == 0
    assert w["failures"]["RequestFailed(timeout)"]["count"] == 10
    assert s.steps["stuck"]["errors_by_kind"]["timeout"] == 10
    assert s.requests == s.successes + s.errors == 20


def test_a_queue_feeder_hands_each_row_out_once_over_processes(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        from hitpool.hit import scenario, feeder

        users = feeder.csv({csv!r}, mode="queue")

        @scenario
        async def once(s):
            row = users.next()
            r = await s.post("/login", json={{"user": row["user"]}}, name="login")
            s.headers["Authorization"] = "Bearer " + r.json()["token"]
            await s.get("/items/" + row["item"], name="item")
        """,
        csv=_users(tmp_path, 30),
    )
    out = tmp_path / "out.json"
    with shop_in_thread() as shop:
        code = main(["-f", script, "-n", "36", "-c", "4", "-p", "2", "-o", str(out), shop.url])
        assert code == 0
        assert shop.users == {f"u{i}": 1 for i in range(30)}  # each row once, none twice
        assert shop.bad_tokens == 0
    doc = json.loads(out.read_text())["summary"]
    once = doc["scenarios"]["once"]
    assert once["started"] == 36 and once["completed"] == 30
    assert once["failures"]["FeederEmpty"]["count"] == 6
    assert doc["processes"] == 2 and doc["steps"]["item"]["requests"] == 30


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-f", "/nonexistent/x.py"], "no such file"),
        (["-f", "{empty}"], "declares no scenario"),
        (["-f", "{raises}"], "raised ZeroDivisionError at line 2"),
        (["-f", "{empty}", "-d", "x"], "drop -m/-d/-T"),
        (["--max-inflight", "5"], "caps the iterations of -f"),
    ],
)
def test_a_bad_script_is_a_usage_error_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    (tmp_path / "empty.py").write_text("x = 1\n")
    (tmp_path / "raises.py").write_text("import os\n1 / 0\n")
    argv = [a.format(empty=tmp_path / "empty.py", raises=tmp_path / "raises.py") for a in args]
    assert main([*argv, "http://127.0.0.1:9/"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


async def test_a_stop_ends_the_run_with_what_was_counted(shop: Shop, tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        from hitpool.hit import scenario

        @scenario
        async def hang(s):
            await s.get("/slow/10000", name="hang")
        """,
    )
    stop = shop.notify("/slow", 3)  # Ctrl-C once three iterations wait on the server
    s = await asyncio.wait_for(
        run_async(Spec(shop.url, script=script, rps=1000, requests=3), stop=stop), 5
    )
    w = s.scenarios["hang"]
    assert s.interrupted and w["started"] == 3 and w["failed"] == 3
    assert w["failures"]["Cancelled"]["count"] == 3
    assert s.errors_by_kind["cancelled"] == 3 == s.requests


async def test_a_script_imports_modules_beside_it(shop: Shop, tmp_path: Path) -> None:
    (tmp_path / "helpers_beside.py").write_text("PATH = '/browse'\n")
    script = _script(
        tmp_path,
        """
        from hitpool.hit import scenario
        from helpers_beside import PATH

        @scenario
        async def browse(s):
            await s.get(PATH, name="browse")
        """,
    )
    s = await run_async(Spec(shop.url, script=script, requests=3, concurrency=1))
    assert s.steps["browse"]["successes"] == 3 == shop.seen["/browse"]


def test_a_saved_scenario_run_keeps_its_scenarios_and_steps(tmp_path: Path) -> None:
    from hitpool.hit import saved

    script = _script(tmp_path, CHECKOUT, csv=_users(tmp_path))
    path = tmp_path / "run.hit"
    with shop_in_thread() as shop:
        assert main(["-f", script, "-n", "8", "-c", "2", "--save", str(path), shop.url]) == 0
    doc = saved.loads(path.read_bytes(), "run").json()
    assert doc["scenarios"]["checkout"]["completed"] == 6
    assert doc["steps"]["login"]["requests"] == 6 and doc["steps"]["browse"]["requests"] == 2


async def test_iterations_that_never_wait_do_not_starve_the_loop(
    shop: Shop, tmp_path: Path
) -> None:
    script = _script(
        tmp_path,
        """
        from hitpool.hit import scenario

        @scenario
        async def hasty(s):
            raise LookupError("no await before this")
        """,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, stop.set)  # Ctrl-C, a moment in
    spec = Spec(shop.url, script=script, duration=30.0, concurrency=2)
    s = await asyncio.wait_for(run_async(spec, stop=stop), 5)
    w = s.scenarios["hasty"]
    assert s.interrupted and w["failed"] == w["started"] > 0
    assert w["failures"]["LookupError"]["count"] == w["failed"]


async def test_head_then_get_on_one_kept_alive_connection(shop: Shop, tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        from hitpool.hit import scenario

        @scenario
        async def peek(s):
            r = await s.head("/browse", name="head")
            assert r.content == b"" and r.headers["content-length"] == "17"
            r = await s.get("/browse", name="get")
            assert r.content == b"<html>shop</html>"
        """,
    )
    s = await run_async(Spec(shop.url, script=script, requests=5, concurrency=1))
    assert s.scenarios["peek"]["completed"] == 5 and s.errors == 0
    assert s.steps["head"]["successes"] == s.steps["get"]["successes"] == 5
    assert shop.seen["/browse"] == 10


async def test_a_request_the_scenario_gives_up_on_counts_once_as_cancelled(
    shop: Shop, tmp_path: Path
) -> None:
    script = _script(
        tmp_path,
        """
        import asyncio
        from hitpool.hit import scenario

        @scenario
        async def impatient(s):
            r = await s.get("/browse", name="fine")
            try:
                await asyncio.wait_for(s.get("/slow/300", name="slow"), 0.01)
            except TimeoutError:
                pass
            r = await s.get("/browse", name="fine")  # another connection: that one is busy
            r.expect(200)
        """,
    )
    s = await run_async(Spec(shop.url, script=script, requests=2, concurrency=1))
    assert s.scenarios["impatient"]["completed"] == 2
    slow = s.steps["slow"]
    assert slow["requests"] == 2 and slow["errors_by_kind"]["cancelled"] == 2
    assert s.steps["fine"]["successes"] == 4
    assert s.requests == s.successes + s.errors == 6
