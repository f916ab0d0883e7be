"""Strict JSON at the door: NaN, Infinity, lone surrogates and nesting past MAX_DEPTH are a
400 naming the field, never a 202 that poisons the store (issue 10, findings 1, 9, 13)."""

from __future__ import annotations

import pytest

from hitpool._errors import SpecError
from hitpool.hitd.app import parse_jobs, parse_work
from hitpool.hitd.jsonin import MAX_DEPTH, decode

JSON = {"Content-Type": "application/json"}


def nested(depth: int) -> bytes:
    """A job whose args hold lists nested so that the whole body is `depth` levels deep."""
    inner = depth - 2  # the job object and its args are two levels
    return b'{"task":"t","args":{"x":' + b"[" * (inner - 1) + b"[]" + b"]" * (inner - 1) + b"}}"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"task":"t","args":{"headers":{"X":NaN}}}', "args.headers.X"),
        (b'{"task":"t","args":{"x":Infinity}}', "args.x"),
        (b'{"task":"t","args":{"x":[1,-Infinity]}}', "args.x[1]"),
        (b'[{"task":"t"},{"task":"t","args":{"ok":[[NaN]]}}]', "[1].args.ok[0][0]"),
        (b"NaN", "body"),
        (b'{"task":"t","args":{"name":"a\\ud800"}}', "args.name"),
        (b'{"task":"t","args":{"x":["\\udfff"]}}', "args.x[0]"),
        (b'{"task":"t","args":{"\\udc80":1}}', "args.'\\udc80'"),
        (b'{"task":"t","args":{"x":' + b"[" * 70 + b"]" * 70 + b"}}", "args.x"),
        (b"[" * 65 + b"]" * 65, "[0][0][0]"),
    ],
)
def test_not_strict_json_is_refused_naming_the_field(body: bytes, field: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_jobs(body, 0.0)
    assert e.value.field == field, e.value.message


def test_the_depth_limit_is_one_number_whatever_the_depth() -> None:
    """Finding 9: 985 levels gave a 503 (the store's encoder ran out of stack), 986 a 400.
    Every depth past MAX_DEPTH is a 400 and every depth up to it is accepted."""
    [job], _ = parse_jobs(nested(MAX_DEPTH), 0.0)
    assert job.task == "t"
    for depth in (MAX_DEPTH + 1, 985, 986, 5000, 200_000):
        with pytest.raises(SpecError) as e:
            parse_jobs(nested(depth), 0.0)
        assert f"deeper than {MAX_DEPTH}" in e.value.message
        assert e.value.field == "args.x"  # the same field, decodable or too deep to be


def test_strings_that_only_look_suspicious_are_kept() -> None:
    doc = decode(
        b'{"s":"NaN Infinity [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",'
        b'"e":"\\u00e9\\ud83d\\ude00"}'
    )
    assert doc["e"] == "\u00e9\U0001f600"
    assert doc["s"].startswith("NaN Infinity [")


def test_work_with_a_bom_is_json_not_a_form() -> None:
    """Finding 13: a BOM made /work parse the JSON object as a form (a `name` of garbage)."""
    body = b'\xef\xbb\xbf{"name": "Ann", "delay": 1}'
    assert parse_work(body, "", "") == ("Ann", 1.0)
    with pytest.raises(SpecError) as e:
        parse_work(b'\xef\xbb\xbf{"name": NaN}', "", "")
    assert e.value.field == "name"
    with pytest.raises(SpecError) as e:
        parse_work(b"\xef\xbb\xbf{name=Ann", "", "")
    assert e.value.field == "body"


async def test_nan_on_sqlite_is_a_400_and_the_server_keeps_running(
    start_hitd, connect, tmp_path
) -> None:
    """Finding 1: one NaN got a 202 and stalled every later claim of a SQLite server."""
    hitd = await start_hitd(store=f"sqlite:///{tmp_path}/nan.db")
    c = await connect(hitd.port)
    bad = b'{"task":"hit","args":{"url":"http://127.0.0.1:1/","requests":1,"headers":{"X":NaN}}}'
    r = await c.request("POST", "/jobs", bad, JSON)
    assert (r.status, r.json()["field"]) == (400, "args.headers.X")
    for depth in (985, 986):
        r = await c.request("POST", "/jobs", nested(depth), JSON)
        assert (r.status, r.json()["field"]) == (400, "args.x")
        assert f"deeper than {MAX_DEPTH}" in r.json()["message"]
    r = await c.request("POST", "/jobs", {"task": "hello", "args": {"name": "after"}}, JSON)
    assert r.status == 202
    await hitd.runner.until_idle()
    job = (await c.request("GET", f"/jobs/{r.json()['id']}")).json()
    assert job["status"] == "succeeded"
    assert (await hitd.store.counts())["succeeded"] == 1


def test_answers_are_json_even_of_a_non_finite_result() -> None:
    """A task's result may hold NaN: the answer says null, never the bare token NaN."""
    import json

    from hitpool.hitd.messages import json_response

    resp = json_response(200, {"result": {"x": float("nan"), "y": [float("inf"), 1.5]}})
    assert json.loads(resp.body, parse_constant=lambda c: pytest.fail(c)) == {
        "result": {"x": None, "y": [None, 1.5]}
    }


@pytest.mark.parametrize(
    ("prefix", "suffix"),
    [
        ('{"task":"t","args":{"x":', "}}"),
        ('{"task":"t [{,:","args":{"a\\"]{":1,"x":', "}}"),
        ('[{"task":"t"},{"task":"t","args":{"ok":[1,"],[",', "]}}]"),
        ('{"task":"t","args":{"k":{"\\u00e9":', "}}}"),
    ],
)
def test_too_deep_to_decode_names_the_field_a_decodable_one_would(prefix: str, suffix: str) -> None:
    """The text-only path (for bodies that overflow the decoder) and the walk of a decoded
    document name the same field; strings holding brackets, commas or quotes do not count."""
    fields = []
    for depth in (MAX_DEPTH, 5000):  # decodable past the limit, then far past the decoder
        body = (prefix + "[" * depth + "]" * depth + suffix).encode()
        with pytest.raises(SpecError) as e:
            parse_jobs(body, 0.0)
        fields.append(e.value.field)
    assert fields[0] == fields[1] != "body"
