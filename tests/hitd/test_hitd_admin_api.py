"""The job administration API (hitd/admin.py) and the dashboard's routes without a browser:
in-process hitd on a real socket with a real SQLite file."""

from __future__ import annotations

import json

import pytest

from hitpool import SpecError
from hitpool.hitd.admin import parse_bulk, parse_list, parse_purge
from hitpool.hitd.store.base import JobQuery
from hitpool.hitd.tasks import task

JSON = {"Content-Type": "application/json"}
UI = {"X-Requested-With": "hitd-ui"}

_fail = {"on": True}


@task(name="test_admin_flaky")
def flaky(word: str) -> str:
    """Fails while _fail["on"]: a job that ends dead after its one attempt."""
    if _fail["on"]:
        raise RuntimeError(f"failed on {word}")
    return word


async def dead_job(hitd, c, word: str = "w") -> int:
    r = await c.request(
        "POST",
        "/jobs",
        {"task": "test_admin_flaky", "args": {"word": word}, "max_attempts": 1},
        JSON,
    )
    assert r.status == 202
    await hitd.runner.until_idle()
    job = (await c.request("GET", f"/jobs/{r.json()['id']}")).json()
    assert job["status"] == "dead", job
    return int(job["id"])


@pytest.fixture(autouse=True)
def failing() -> None:
    _fail["on"] = True


# -- parsing: pure, a 400 names the parameter ----------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=bogus", "status"),
        ("status=dead,nope", "status"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("before=-1", "before"),
        ("before=0", "before"),
        ("task=", "task"),
        ("q=" + "x" * 201, "q"),
        ("q=%00", "q"),
        ("q=%ff", "query"),
        ("sort=id", "sort"),
        ("limit=5&limit=6", "limit"),
    ],
)
def test_parse_list_refuses_naming_the_parameter(query: str, field: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_list(query)
    assert e.value.field == field


def test_parse_list_reads_every_parameter() -> None:
    assert parse_list("") == JobQuery()
    q = parse_list("status=dead&status=failed&task=hit&q=%22ann%22&limit=7&before=90")
    assert q == JobQuery(("dead", "failed"), "hit", '"ann"', 90, 7)
    assert parse_list("status=dead,failed,dead").statuses == ("dead", "failed")


def test_parse_bulk_and_purge() -> None:
    assert parse_bulk("status=dead") == ("dead", 1000)
    assert parse_bulk("status=failed&limit=5") == ("failed", 5)
    for query, field in [
        ("", "status"),
        ("status=succeeded", "status"),
        ("status=dead,failed", "status"),
        ("status=dead&limit=10001", "limit"),
    ]:
        with pytest.raises(SpecError) as e:
            parse_bulk(query)
        assert e.value.field == field
    assert parse_purge("purge=1") and parse_purge("purge=true") and not parse_purge("")
    with pytest.raises(SpecError) as e:
        parse_purge("purge=yes")
    assert e.value.field == "purge"


# -- the routes ------------------------------------------------------------------------------


async def test_list_newest_first_search_and_cursor(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    ids = []
    for name in ("ann", "bob", "ann2", "Zoë 🎉"):
        r = await c.request("POST", "/jobs", {"task": "hello", "args": {"name": name}}, JSON)
        ids.append(r.json()["id"])
    await hitd.runner.until_idle()
    body = (await c.request("GET", "/jobs?q=Zo%C3%AB%20%F0%9F%8E%89")).json()
    assert [j["args"]["name"] for j in body["jobs"]] == ["Zoë 🎉"]  # as typed, not escaped
    ids.pop()
    body = (await c.request("GET", f"/jobs?limit=2&before={ids[2] + 1}")).json()
    assert [j["id"] for j in body["jobs"]] == [ids[2], ids[1]]
    assert body["next"] == f"/jobs?limit=2&before={ids[1]}"  # the cursor replaced
    body = (await c.request("GET", body["next"])).json()
    assert [j["id"] for j in body["jobs"]] == [ids[0]] and body["next"] is None
    body = (await c.request("GET", "/jobs?q=ann&status=succeeded")).json()
    assert [j["id"] for j in body["jobs"]] == [ids[2], ids[0]]
    assert body["jobs"][0]["args"] == {"name": "ann2"}
    r = await c.request("GET", "/jobs?status=lost")
    assert (r.status, r.json()["field"]) == (400, "status")
    r = await c.request("PUT", "/jobs")
    assert (r.status, r.headers["allow"]) == (405, "GET, HEAD, POST")


async def test_a_page_of_big_jobs_is_bounded_in_size_and_goes_on(start_hitd, connect) -> None:
    # Each job holds about 1.8 M characters (its args, and hello's result repeats them):
    # limit=500 alone would make the page as big as the table.
    hitd = await start_hitd()
    c = await connect(hitd.port)
    ids = []
    for _ in range(4):
        job = {"task": "hello", "args": {"name": "x" * 900_000}}
        ids.append((await c.request("POST", "/jobs", job, JSON)).json()["id"])
    await hitd.runner.until_idle()
    body = (await c.request("GET", "/jobs?limit=500")).json()
    assert [j["id"] for j in body["jobs"]] == ids[:0:-1]  # three pass MAX_PAGE_CHARS
    assert body["next"] == f"/jobs?limit=500&before={ids[1]}"
    body = (await c.request("GET", body["next"])).json()
    assert [j["id"] for j in body["jobs"]] == [ids[0]] and body["next"] is None


async def test_retry_runs_a_dead_job_now(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    id = await dead_job(hitd, c)
    _fail["on"] = False
    r = await c.request("POST", f"/jobs/{id}/retry")
    assert r.status == 200 and r.json()["status"] == "queued"
    await hitd.runner.until_idle()  # woken by the retry: no poll waited for
    job = (await c.request("GET", f"/jobs/{id}")).json()
    assert (job["status"], job["result"], job["attempts"]) == ("succeeded", "w", 1)
    r = await c.request("POST", f"/jobs/{id}/retry")
    assert (r.status, r.json()["field"]) == (409, "status")
    r = await c.request("POST", "/jobs/999999/retry")
    assert (r.status, r.json()["field"]) == (404, "id")
    r = await c.request("POST", "/jobs/x1/retry")
    assert r.status == 404
    r = await c.request("GET", f"/jobs/{id}/retry")
    assert (r.status, r.headers["allow"]) == (405, "POST")


async def test_retry_of_a_scheduled_job_runs_it_now(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    r = await c.request(
        "POST", "/jobs", {"task": "hello", "args": {"name": "later"}, "delay": "1h"}, JSON
    )
    id = r.json()["id"]
    assert (await c.request("POST", f"/jobs/{id}/retry")).status == 200
    await hitd.runner.until_idle()
    assert (await c.request("GET", f"/jobs/{id}")).json()["status"] == "succeeded"


async def test_bulk_retry_of_dead_jobs(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    ids = [await dead_job(hitd, c, f"w{i}") for i in range(3)]
    _fail["on"] = False
    r = await c.request("POST", "/jobs/retry?status=dead&limit=2")
    assert r.json() == {"status": "dead", "retried": 2, "limit": 2}
    r = await c.request("POST", "/jobs/retry?status=dead")
    assert r.json()["retried"] == 1
    await hitd.runner.until_idle()
    statuses = [(await c.request("GET", f"/jobs/{i}")).json()["status"] for i in ids]
    assert statuses == ["succeeded"] * 3
    r = await c.request("POST", "/jobs/retry")
    assert (r.status, r.json()["field"]) == (400, "status")
    r = await c.request("POST", "/jobs/retry?status=running")
    assert (r.status, r.json()["field"]) == (400, "status")


async def test_delete_with_purge_deletes_a_finished_job(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    old = await dead_job(hitd, c)
    newest = await dead_job(hitd, c)
    counts = (await c.request("GET", "/stats")).json()["jobs"]
    assert (await c.request("DELETE", f"/jobs/{old}?purge=1")).json() == {
        "id": old,
        "deleted": True,
    }
    assert (await c.request("GET", f"/jobs/{old}")).status == 404
    assert (await c.request("GET", "/stats")).json()["jobs"]["dead"] == counts["dead"] - 1
    r = await c.request("DELETE", f"/jobs/{newest}?purge=1")
    assert (r.status, r.json()["field"]) == (409, "id")
    r = await c.request("DELETE", f"/jobs/{old}?purge=1")
    assert (r.status, r.json()["field"]) == (404, "id")
    r = await c.request("POST", "/jobs", {"task": "hello", "delay": "1h"}, JSON)
    queued = r.json()["id"]
    r = await c.request("DELETE", f"/jobs/{queued}?purge=1")
    assert (r.status, r.json()["field"]) == (409, "status")
    r = await c.request("DELETE", f"/jobs/{queued}?purge=maybe")
    assert (r.status, r.json()["field"]) == (400, "purge")
    r = await c.request("DELETE", f"/jobs/{queued}")  # without purge: the cancel, as before
    assert r.json()["status"] == "cancelled"


async def test_read_only_refuses_the_actions(start_hitd, connect) -> None:
    hitd = await start_hitd(ui="read-only")
    c = await connect(hitd.port)
    id = await dead_job(hitd, c)
    for method, path in [
        ("POST", f"/jobs/{id}/retry"),
        ("POST", "/jobs/retry?status=dead"),
        ("DELETE", f"/jobs/{id}?purge=1"),
    ]:
        r = await c.request(method, path)
        assert (r.status, r.json()["field"]) == (403, "ui"), path
    assert (await c.request("GET", f"/jobs/{id}")).json()["status"] == "dead"
    state = (await c.request("GET", "/ui/state")).json()
    assert state["mode"] == "read-only"
    assert "dashboard /ui read-only" in hitd.startup_line()
    assert (await c.request("GET", "/ui")).status == 200


async def test_ui_off_serves_no_page_but_keeps_the_api(start_hitd, connect) -> None:
    hitd = await start_hitd(ui="off")
    c = await connect(hitd.port)
    assert "dashboard" not in hitd.startup_line()
    for path in ("/ui", "/ui/state", "/ui/static/dashboard.js"):
        assert (await c.request("GET", path)).status == 404, path
    assert (await c.request("GET", "/jobs")).status == 200


async def test_the_token_guards_the_api_and_the_page_logs_in(start_hitd, connect) -> None:
    hitd = await start_hitd(token="s3cret")
    c = await connect(hitd.port)
    assert (await c.request("GET", "/jobs")).status == 401
    assert (await c.request("POST", "/jobs/1/retry")).status == 401
    auth = {"Authorization": "Bearer s3cret"}
    # An action refused is no refused job submission: the metric counts POST /jobs and /work.
    assert (await c.request("GET", "/stats", headers=auth)).json()["rejected"] == {}
    assert (await c.request("GET", "/ui/state")).status == 401
    page = await c.request("GET", "/ui")
    assert page.status == 200 and b'name="token"' in page.body  # the login form
    r = await c.request("POST", "/ui/login", "token=wrong")
    assert r.status == 401 and "set-cookie" not in r.headers
    r = await c.request("POST", "/ui/login", "token=s3cret")
    assert (r.status, r.headers["location"]) == (303, "/ui")
    cookie = r.headers["set-cookie"].split(";")[0]
    assert "s3cret" not in cookie and "HttpOnly" in r.headers["set-cookie"]
    assert "SameSite=Strict" in r.headers["set-cookie"]
    with_cookie = {"Cookie": cookie}
    page = await c.request("GET", "/ui", headers=with_cookie)
    assert b"dashboard.js" in page.body
    assert (await c.request("GET", "/stats", headers=with_cookie)).status == 200
    assert (await c.request("GET", "/ui/state", headers=with_cookie)).status == 200
    # A write with the cookie alone (what a cross-site form could send) is refused.
    r = await c.request("POST", "/jobs/retry?status=dead", headers=with_cookie)
    assert (r.status, r.json()["field"]) == (403, "X-Requested-With")
    r = await c.request("POST", "/jobs/retry?status=dead", headers={**with_cookie, **UI})
    assert r.status == 200
    bad = {"Cookie": "hitd_session=" + "0" * 64}
    assert (await c.request("GET", "/stats", headers=bad)).status == 401
    r = await c.request("GET", "/jobs", headers={"Authorization": "Bearer s3cret"})
    assert r.status == 200


async def test_the_page_and_its_files_come_from_hitd(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    page = await c.request("GET", "/ui")
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for name, kind in [
        ("dashboard.js", "text/javascript"),
        ("uPlot.iife.min.js", "text/javascript"),
        ("uPlot.min.css", "text/css"),
        ("dashboard.css", "text/css"),
    ]:
        r = await c.request("GET", f"/ui/static/{name}")
        assert r.status == 200 and r.headers["content-type"].startswith(kind), name
    assert (await c.request("GET", "/ui/static/../app.py")).status == 404
    assert (await c.request("GET", "/ui/nothing")).status == 404


async def test_state_reports_latency_rates_and_recent_failures(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    id = await dead_job(hitd, c, "<b>x</b>")
    hitd.rates.sample()  # what the sampler does each second
    st = (await c.request("GET", "/ui/state")).json()
    assert [j["id"] for j in st["recent_failures"]] == [id]
    assert st["recent_failures"][0]["error"].endswith("failed on <b>x</b>")
    # The panel's rows, not the jobs' args and results (polled every second).
    assert set(st["recent_failures"][0]) == {
        "id",
        "task",
        "status",
        "attempts",
        "finished_at",
        "error",
    }
    assert st["queue_latency_s"] is None
    assert st["workers"]["size"] == 2
    assert set(st["rates"]) == {"t", "accepted", "completed", "failed"}
    assert sum(st["rates"]["accepted"]) <= 1 and sum(st["rates"]["failed"]) <= 1


async def test_state_shows_the_head_of_a_long_error(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    id = await dead_job(hitd, c, "y" * 5000)
    [row] = (await c.request("GET", "/ui/state")).json()["recent_failures"]
    assert row["error"].endswith("y…") and len(row["error"]) == 501
    assert (await c.request("GET", f"/jobs/{id}")).json()["error"].endswith("y" * 5000)


async def test_read_only_refuses_a_cancel_from_the_page_but_not_the_api(
    start_hitd, connect
) -> None:
    hitd = await start_hitd(token="s3cret", ui="read-only")
    c = await connect(hitd.port)
    auth = {"Authorization": "Bearer s3cret"}
    r = await c.request("POST", "/jobs", {"task": "hello", "delay": "1h"}, {**JSON, **auth})
    id = r.json()["id"]
    login = await c.request("POST", "/ui/login", "token=s3cret")
    cookie = {"Cookie": login.headers["set-cookie"].split(";")[0], **UI}
    r = await c.request("DELETE", f"/jobs/{id}", headers=cookie)
    assert (r.status, r.json()["field"]) == (403, "ui")
    assert (await c.request("DELETE", f"/jobs/{id}", headers=auth)).json()["status"] == "cancelled"


async def test_state_measures_queue_latency_from_the_oldest_due_job() -> None:
    from hitpool.hitd.metrics import WorkerNumbers
    from hitpool.hitd.rates import RateRing
    from hitpool.hitd.store import NewJob
    from hitpool.hitd.store.memory import MemoryStore
    from hitpool.hitd.ui import Dashboard

    t0 = 1_800_000_000.0
    store = MemoryStore()
    await store.enqueue([NewJob("hello", {}, t0 - 5), NewJob("hello", {}, t0 - 2)], t0)
    await store.enqueue([NewJob("hello", {}, t0 + 60)], t0)  # not due: no wait yet
    numbers = WorkerNumbers(4, 1, 3, 0, 0, 0, None)
    ui = Dashboard("on", None, store, RateRing(), lambda: numbers, lambda: t0)
    reply = await ui._state()
    body = json.loads(reply.body)
    assert body["queue_latency_s"] == 5.0
    assert body["workers"] == {"size": 4, "busy": 1, "by_process": {}}


def test_the_ui_flag() -> None:
    from hitpool.hitd.cli import parse_config

    assert parse_config([], {}).ui == "on"
    assert parse_config(["--ui", "read-only"], {}).ui == "read-only"
    with pytest.raises(SystemExit) as e:
        parse_config(["--ui", "maybe"], {})
    assert e.value.code == 2


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"Origin": "http://evil.example"}, "Origin"),
        ({"Origin": "null"}, "Origin"),  # a sandboxed frame, a file:// page
        ({"Origin": "http://test.evil.example"}, "Origin"),
        ({"Sec-Fetch-Site": "cross-site", "Origin": "http://test"}, "Sec-Fetch-Site"),
        ({"Sec-Fetch-Site": "same-site"}, "Sec-Fetch-Site"),  # another port of the host
    ],
)
async def test_without_a_token_a_cross_site_action_is_refused(
    start_hitd, connect, headers: dict[str, str], field: str
) -> None:
    # What a form on another site makes an operator's browser send to a loopback hitd.
    hitd = await start_hitd()
    c = await connect(hitd.port)
    id = await dead_job(hitd, c)
    gone = await dead_job(hitd, c, "older")
    await dead_job(hitd, c, "newest")  # so that `gone` is not the newest job
    for method, path in [
        ("POST", f"/jobs/{id}/retry"),
        ("POST", "/jobs/retry?status=dead"),
        ("DELETE", f"/jobs/{gone}?purge=1"),
    ]:
        r = await c.request(method, path, headers=headers)
        assert (r.status, r.json()["field"]) == (403, field), path
    assert (await c.request("GET", f"/jobs/{id}")).json()["status"] == "dead"
    assert (await c.request("GET", f"/jobs/{gone}")).status == 200


async def test_a_same_origin_or_non_browser_action_passes(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    for headers in (
        {},  # curl
        {"Origin": "http://test", "Sec-Fetch-Site": "same-origin"},  # hitd's own page
        {"Origin": "http://TEST"},  # a browser without Sec-Fetch-Site
        {"Sec-Fetch-Site": "none", "Origin": "http://proxy.example"},  # Host rewritten
    ):
        id = await dead_job(hitd, c)
        r = await c.request("POST", f"/jobs/{id}/retry", headers=headers)
        assert r.status == 200, headers


async def test_a_bad_purge_without_the_token_is_a_401_not_a_400(start_hitd, connect) -> None:
    hitd = await start_hitd(token="s3cret")
    c = await connect(hitd.port)
    r = await c.request("DELETE", "/jobs/1?purge=yes")
    assert r.status == 401
    r = await c.request("DELETE", "/jobs/1?purge=yes", headers={"Authorization": "Bearer s3cret"})
    assert (r.status, r.json()["field"]) == (400, "purge")


def test_a_login_lasts_session_s_and_is_bound_to_the_token() -> None:
    from hitpool.hitd.messages import Request
    from hitpool.hitd.rates import RateRing
    from hitpool.hitd.store import Store
    from hitpool.hitd.ui import SESSION_S, Dashboard

    now = [1_800_000_000.0]

    def dashboard(token: str) -> Dashboard:
        store = Store.from_url("memory://")
        return Dashboard("on", token, store, RateRing(), lambda: None, lambda: now[0])  # type: ignore[arg-type, return-value]

    def get(cookie: str) -> Request:
        return Request("GET", "/stats", "", {"cookie": cookie}, b"")

    d = dashboard("s3cret")
    r = d.route(Request("POST", "/ui/login", "", {}, b"token=s3cret"), lambda _: None)
    set_cookie = dict(r.headers)["Set-Cookie"]  # type: ignore[union-attr]
    assert f"Max-Age={SESSION_S}" in set_cookie and "s3cret" not in set_cookie
    cookie = set_cookie.split(";")[0]
    assert d.session(get(cookie))
    assert dashboard("s3cret").session(get(cookie))  # another hitd with the same token
    assert not dashboard("other").session(get(cookie))
    name, _, value = cookie.partition("=")
    stamp, _, mac = value.partition(".")
    assert not d.session(get(f"{name}={int(stamp) + 3600}.{mac}"))  # a stamp moved on
    now[0] += SESSION_S - 1
    assert d.session(get(cookie))
    now[0] += 2
    assert not d.session(get(cookie))  # expired: the login form again


async def test_without_a_token_a_cross_site_job_submission_is_refused(start_hitd, connect) -> None:
    # What <form enctype="text/plain" action="http://127.0.0.1:8080/jobs"> on another site
    # sends: a JSON body in a "simple" request, which no preflight stops.
    hitd = await start_hitd()
    c = await connect(hitd.port)
    form = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
    body = '{"task": "hello", "args": {"name": "x="}}'  # the form's = inside a string
    r = await c.request("POST", "/jobs", body, form)
    assert (r.status, r.json()["field"]) == (403, "Origin")
    r = await c.request("POST", "/jobs", body, {**form, "Sec-Fetch-Site": "cross-site"})
    assert (r.status, r.json()["field"]) == (403, "Sec-Fetch-Site")
    assert (await c.request("GET", "/stats")).json()["jobs"].get("queued", 0) == 0
    assert (await c.request("POST", "/jobs", body, {"Content-Type": "text/plain"})).status == 202
