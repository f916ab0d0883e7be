"""Spec validation, the flag-value parsers and the request bytes: pure tables."""

from __future__ import annotations

import pytest

from hitpool._errors import SpecError
from hitpool.durations import parse_seconds
from hitpool.hit.spec import (
    DEFAULT_REQUESTS,
    Spec,
    parse_header,
    parse_ok,
    parse_processes,
    parse_url,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("2m", 120.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("100us", 1e-4),
        ("3", 3.0),
        (".5s", 0.5),
        (" 7s ", 7.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_seconds(text, "-z") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10x", "-1s", "1e3s", "ten seconds", "1s2"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_seconds(text, "-z")
    assert e.value.field == "-z" and "10s" in e.value.message


def test_parse_header_and_ok_and_processes() -> None:
    assert parse_header("X-A:  b c ") == ("X-A", "b c")
    assert parse_ok("200-399") == ((200, 399),)
    assert parse_ok("200, 204,300-302") == ((200, 200), (204, 204), (300, 302))
    assert parse_processes("3") == 3 and parse_processes("auto") >= 1
    for bad, fn in (("nocolon", parse_header), ("a b: c", parse_header), ("x", parse_ok)):
        with pytest.raises(SpecError):
            fn(bad)


@pytest.mark.parametrize(
    ("url", "host", "port", "path", "host_header"),
    [
        ("http://example.com", "example.com", 80, "/", "example.com"),
        ("https://example.com/a?b=1", "example.com", 443, "/a?b=1", "example.com"),
        ("http://127.0.0.1:8080/x", "127.0.0.1", 8080, "/x", "127.0.0.1:8080"),
        ("http://[::1]:9000/", "::1", 9000, "/", "[::1]:9000"),
        ("http://[::1]/", "::1", 80, "/", "[::1]"),
    ],
)
def test_parse_url(url: str, host: str, port: int, path: str, host_header: str) -> None:
    t = parse_url(url)
    assert (t.host, t.port, t.path, t.host_header) == (host, port, path, host_header)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"url": "ftp://x/"}, "url"),
        ({"url": "http:///nohost"}, "url"),
        ({"url": "http://x/a b"}, "url"),
        ({"requests": 0}, "requests"),
        ({"requests": True}, "requests"),
        ({"concurrency": -1}, "concurrency"),
        ({"processes": 0}, "processes"),
        ({"rps": 0}, "rps"),
        ({"duration": -1.0}, "duration"),
        ({"timeout": 0}, "timeout"),
        ({"method": "GE T"}, "method"),
        ({"headers": (("X", "a\r\nb"),)}, "headers"),
        ({"ok": ((99, 200),)}, "ok"),
        ({"ok": ((300, 200),)}, "ok"),
        ({"content_type": "a\nb"}, "content_type"),
    ],
)
def test_spec_rejects_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"url": "http://127.0.0.1/", **kwargs}
    with pytest.raises(SpecError) as e:
        Spec(**args)  # type: ignore[arg-type]
    assert e.value.field == field


def test_defaults_and_lanes() -> None:
    assert Spec("http://x/").requests == DEFAULT_REQUESTS
    assert Spec("http://x/", duration=5).requests is None
    assert Spec("http://x/", requests=3, concurrency=50).lanes == 3
    assert Spec("http://x/", duration=5, concurrency=7).lanes == 7


def test_request_bytes_are_built_once_and_exact() -> None:
    spec = Spec(
        "http://127.0.0.1:8080/jobs?x=1",
        method="POST",
        body=b"[1]",
        content_type="application/json",
        headers=(("X-Key", "v"),),
    )
    assert spec.request_bytes() == (
        b"POST /jobs?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: hit/0.1\r\n"
        b"Accept: */*\r\nX-Key: v\r\nContent-Type: application/json\r\n"
        b"Content-Length: 3\r\n\r\n[1]"
    )
    assert b"Content-Length" not in Spec("http://x/").request_bytes()
    assert b"Content-Length: 0\r\n" in Spec("http://x/", method="POST").request_bytes()


def test_a_content_length_header_equal_to_the_body_is_sent_once() -> None:
    # It was sent beside hit's own: two Content-Length lines, which a server refuses.
    spec = Spec("http://x/", method="POST", body=b"abc", headers=(("content-length", "3"),))
    assert spec.request_bytes().lower().count(b"content-length: 3\r\n") == 1


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ((("Content-Length", "10"),), b"abc"),  # the server would read 7 bytes of the next
        ((("Content-Length", "3"),), b""),
        ((("Transfer-Encoding", "chunked"),), b"abc"),
    ],
)
def test_a_header_that_contradicts_the_body_framing_is_refused(
    headers: tuple[tuple[str, str], ...], body: bytes
) -> None:
    with pytest.raises(SpecError) as e:
        Spec("http://x/", method="POST", body=body, headers=headers)
    assert e.value.field == "headers" and "remove" in e.value.message


def test_from_dict_takes_json_ish_input() -> None:
    spec = Spec.from_dict(
        {
            "url": "http://127.0.0.1:1/",
            "requests": 10,
            "duration": "2s",
            "timeout": "250ms",
            "headers": {"X-A": "1"},
            "body": "[]",
            "ok": "200-399",
            "processes": "auto",
        }
    )
    assert (spec.duration, spec.timeout, spec.headers, spec.body) == (
        2.0,
        0.25,
        (("X-A", "1"),),
        b"[]",
    )
    assert spec.ok == ((200, 399),) and spec.processes >= 1
    assert Spec.from_dict({"url": "http://x/", "headers": ["A: b"]}).headers == (("A", "b"),)
    with pytest.raises(SpecError) as e:
        Spec.from_dict({"url": "http://x/", "bogus": 1})
    assert e.value.field == "bogus"
    with pytest.raises(SpecError) as e:
        Spec.from_dict({"requests": 1})
    assert e.value.field == "url"
    with pytest.raises(SpecError) as e:
        Spec.from_dict({"url": "http://x/", "duration": "soon"})
    assert e.value.field == "duration"


U = "http://127.0.0.1:8080/"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"url": 5}, "url"),
        ({"url": None}, "url"),
        ({"url": ["http://x/"]}, "url"),
        ({"url": U, "headers": [5]}, "headers"),
        ({"url": U, "headers": [["a", "b", "c"]]}, "headers"),
        ({"url": U, "headers": [["a"]]}, "headers"),
        ({"url": U, "headers": [[5, "b"]]}, "headers"),
        ({"url": U, "headers": {"X": None}}, "headers"),
        ({"url": U, "headers": {"X": [1]}}, "headers"),
        ({"url": U, "headers": "X: y"}, "headers"),
        ({"url": U, "headers": 5}, "headers"),
        ({"url": U, "ok": [[1]]}, "ok"),
        ({"url": U, "ok": [[200, 299, 300]]}, "ok"),
        ({"url": U, "ok": [["200", "299"]]}, "ok"),
        ({"url": U, "ok": [True]}, "ok"),
        ({"url": U, "ok": []}, "ok"),
        ({"url": U, "ok": 200}, "ok"),
        ({"url": U, "ok": {"a": 1}}, "ok"),
        ({"url": U, "method": 5}, "method"),
        ({"url": U, "body": 5}, "body"),
        ({"url": U, "body": ["x"]}, "body"),
        ({"url": U, "content_type": 5}, "content_type"),
        ({"url": U, "insecure": "yes"}, "insecure"),
        ({"url": U, "rps": True}, "rps"),
        ({"url": U, "rps": "fast"}, "rps"),
        ({"url": U, "timeout": [1]}, "timeout"),
        ({"url": U, "timeout": True}, "timeout"),
        ({"url": U, "duration": {}}, "duration"),
        ({"url": U, "requests": 1.5}, "requests"),
        ({"url": U, "processes": [2]}, "processes"),
        ({"url": U, "concurrency": 1, "processes": 2}, "processes"),
    ],
)
def test_every_bad_value_from_json_is_a_spec_error_naming_the_field(
    data: dict[str, object], field: str
) -> None:
    # hitd's `hit` task builds its Spec from a job's args: anything JSON holds can come,
    # and each must be a SpecError (a 400 naming the field), never a TypeError or 500.
    with pytest.raises(SpecError) as e:
        Spec.from_dict(data)
    assert e.value.field == field


@pytest.mark.parametrize(
    ("ok", "ranges"),
    [
        ("200-399", ((200, 399),)),
        ([200, 204], ((200, 200), (204, 204))),
        ([[200, 299], 304], ((200, 299), (304, 304))),
    ],
)
def test_ok_from_json(ok: object, ranges: tuple[tuple[int, int], ...]) -> None:
    assert Spec.from_dict({"url": U, "ok": ok}).ok == ranges


def test_headers_from_json_in_each_form() -> None:
    want = (("X-A", "1"), ("X-B", "two"))
    for headers in (
        {"X-A": 1, "X-B": "two"},
        ["X-A: 1", "X-B: two"],
        [["X-A", "1"], ("X-B", "two")],
    ):
        assert Spec.from_dict({"url": U, "headers": headers}).headers == want


def test_a_process_needs_a_connection() -> None:
    with pytest.raises(SpecError) as e:
        Spec(U, concurrency=2, processes=3)
    assert e.value.field == "processes" and "concurrency (-c) is 2" in e.value.message
    assert Spec(U, concurrency=3, processes=3).processes == 3


@pytest.mark.parametrize(
    ("url", "auth", "shown"),
    [
        ("http://u:p@h/", "Basic dTpw", "http://u:***@h/"),
        ("http://u@h/", "Basic dTo=", "http://u@h/"),  # no password: user-id and ":"
        ("http://a%40b:%C3%A9@h:81/x", "Basic YUBiOsOp", "http://a%40b:***@h:81/x"),
        ("http://h/", None, "http://h/"),
    ],
)
def test_userinfo_becomes_basic_auth(url: str, auth: str | None, shown: str) -> None:
    spec = Spec(url)
    assert spec.target.authorization == auth and spec.target.shown == shown
    head = spec.request_bytes().decode("latin-1")
    assert (f"\r\nAuthorization: {auth}\r\n" in head) == (auth is not None)
    assert "@" not in head.split("\r\n")[0]  # never in the request line
