"""The built-in `hit` task's server-side bounds (issue 10, findings 6 and 7): caps on
requests, duration and connections, no target that is hitd's own listener, and bad
arguments a 400 naming the field, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from hitpool._errors import SpecError
from hitpool.hitd.tasks import HitLimits, Registry

JSON = {"Content-Type": "application/json"}
URL = "http://127.0.0.1:9/"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"url": 5}, "args.url"),
        ({"url": URL, "headers": [5]}, "args.headers[0]"),
        ({"url": URL, "headers": [["a", "b", "c"]]}, "args.headers[0]"),
        ({"url": URL, "headers": {"X": [1]}}, "args.headers.X"),
        ({"url": URL, "ok": [[1]]}, "args.ok[0]"),
        ({"url": URL, "ok": [[200, "299"]]}, "args.ok[0]"),
        ({"url": URL, "requests": 1e12}, "args.requests"),
        ({"url": URL, "requests": True}, "args.requests"),
        ({"url": URL, "insecure": 1}, "args.insecure"),
        ({"url": URL, "body": {"a": 1}}, "args.body"),
        ({"url": "http://127.0.0.1:abc/"}, "args.url"),
    ],
)
def test_bad_args_name_the_field(args: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as e:
        Registry().check("hit", args)
    assert e.value.field == field, e.value.message


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"requests": 1_000_001}, "args.requests"),
        ({"duration": "100000000h"}, "args.duration"),
        ({"duration": 601}, "args.duration"),
        ({"requests": 1000, "rps": 1}, "args.rps"),  # 1000 s at 1/s
        ({"rps": 100_000, "duration": "10m"}, "args.rps"),  # 60 M requests in its duration
        ({"concurrency": 100_000}, "args.concurrency"),
        ({"concurrency": 600, "processes": 2}, "args.concurrency"),
    ],
)
def test_server_side_caps(args: dict[str, Any], field: str) -> None:
    registry = Registry()
    with pytest.raises(SpecError) as e:
        registry.check("hit", {"url": URL, **args})
    assert e.value.field == field
    assert "--hit-max-" in e.value.message  # the message names the flag that sets the cap


def test_caps_follow_the_flags() -> None:
    loose = Registry(hit_limits=HitLimits(max_requests=10**7, max_concurrency=10**6))
    loose.check("hit", {"url": URL, "requests": 5_000_000, "concurrency": 1})
    loose.check("hit", {"url": URL, "duration": "10m", "concurrency": 1})
    Registry().check("hit", {"url": URL, "requests": 1000, "rps": 2})  # 500 s: within 10 m


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8123/jobs", "http://localhost:8123/", "http://[::1]:8123/"]
)
def test_own_listener_is_refused_unless_allowed(url: str) -> None:
    registry = Registry()
    registry.listeners = (("127.0.0.1", 8123),)
    with pytest.raises(SpecError) as e:
        registry.check("hit", {"url": url, "requests": 1})
    assert e.value.field == "args.url"
    assert "--hit-allow-self" in e.value.message
    registry.check("hit", {"url": url.replace("8123", "8124"), "requests": 1})
    allowed = Registry(hit_limits=HitLimits(allow_self=True))
    allowed.listeners = registry.listeners
    allowed.check("hit", {"url": url, "requests": 1})


def test_a_wildcard_listener_is_reached_on_any_local_address() -> None:
    registry = Registry(allowed_targets=["10.1.2.3"])
    registry.listeners = (("0.0.0.0", 8123),)
    with pytest.raises(SpecError):
        registry.check("hit", {"url": "http://10.1.2.3:8123/", "requests": 1})


async def test_over_http_bad_hit_args_are_400_and_self_targets_refused(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    for args, field in [
        ({"url": 5}, "args.url"),
        ({"url": URL, "headers": [["a", "b", "c"]]}, "args.headers[0]"),
        ({"url": URL, "ok": [[1]]}, "args.ok[0]"),
        ({"url": f"http://127.0.0.1:{hitd.port}/jobs", "requests": 1}, "args.url"),
        ({"url": URL, "requests": 10**12, "duration": "100000000h"}, "args.requests"),
    ]:
        r = await c.request("POST", "/jobs", {"task": "hit", "args": args}, JSON)
        assert (r.status, r.json()["field"]) == (400, field), r.body


def test_a_hit_job_is_timed_out_past_its_duration_cap() -> None:
    """A requests-only test against a slow target is bounded in time as well: the attempt's
    timeout is the duration cap plus what the requests in flight may take."""
    from hitpool.hitd.tasks import HIT_DRAIN_S

    assert Registry().get("hit").timeout == 600.0 + HIT_DRAIN_S
    assert Registry(hit_limits=HitLimits(max_duration_s=5)).get("hit").timeout == 5 + HIT_DRAIN_S
    with pytest.raises(SpecError) as e:
        Registry().check("hit", {"url": URL, "timeout": "2m"})
    assert e.value.field == "args.timeout"
