"""Auth and routing edges (issue 10, findings 12 and 13): the Bearer scheme in any case, a
non-ASCII token sent as UTF-8, no route disclosed before the token check, absolute-form
targets, and a JSON /work body with a BOM."""

from __future__ import annotations

import pytest

TOKEN = "zäh-€-s3cret"  # non-ASCII on purpose: compared as UTF-8 bytes


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_the_scheme_is_case_insensitive_and_the_token_utf8(
    start_hitd, connect, scheme
) -> None:
    hitd = await start_hitd(token=TOKEN)
    c = await connect(hitd.port)
    # The raw client sends header values as UTF-8 bytes, as curl and browsers do.
    r = await c.request("GET", "/stats", headers={"Authorization": f"{scheme} {TOKEN}"})
    assert r.status == 200, r.body


@pytest.mark.parametrize(
    "value", ["", "Bearer", "Bearer ", "Basic " + TOKEN, "Bearer " + TOKEN[:-1], TOKEN]
)
async def test_wrong_credentials_are_401(start_hitd, connect, value) -> None:
    hitd = await start_hitd(token=TOKEN)
    c = await connect(hitd.port)
    r = await c.request("GET", "/stats", headers={"Authorization": value} if value else {})
    assert (r.status, r.json()["field"]) == (401, "Authorization")


async def test_routes_are_not_disclosed_before_the_token(start_hitd, connect) -> None:
    hitd = await start_hitd(token=TOKEN)
    c = await connect(hitd.port)
    for method, path in [("GET", "/nope"), ("PUT", "/jobs"), ("PUT", "/jobs/1"), ("GET", "/uix")]:
        r = await c.request(method, path)
        assert r.status == 401, (method, path)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await c.request("GET", "/nope", headers=auth)).status == 404
    assert (await c.request("PUT", "/jobs", headers=auth)).status == 405
    assert (await c.request("GET", "/healthz")).status == 200  # probes need no token


async def test_absolute_form_targets_are_routed_by_path(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    await c.send(b"GET http://example.com/healthz HTTP/1.1\r\nHost: example.com\r\n\r\n")
    (r,) = await c.replies(1)
    assert (r.status, r.json()) == (200, {"status": "ok"})


async def test_work_with_a_bom_is_json(start_hitd, connect) -> None:
    hitd = await start_hitd()
    c = await connect(hitd.port)
    r = await c.request("POST", "/work", b'\xef\xbb\xbf{"name": "Ann"}')
    assert (r.status, r.json()["name"]) == (201, "Ann")
