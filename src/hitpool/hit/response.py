"""A scenario's response (``r``): status, headers parsed when first read, body, JSON, and
``expect``, which can turn its step's success into an ``expect`` error."""

from __future__ import annotations

import json as _json
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .._errors import HitpoolError

if TYPE_CHECKING:
    from .tally import Tally

__all__ = ["ExpectationFailed", "Headers", "Response", "head_fields"]

# r.json()'s parts: the C scanner json.loads ends in, and the whitespace it skips
_scan: Callable[[str, int], tuple[Any, int]] = _json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_ws: Callable[[str, int], Any] = _json.decoder.WHITESPACE.match  # type: ignore[attr-defined]


class ExpectationFailed(HitpoolError):
    """``r.expect(...)`` got a status it was not given; fails the step and the iteration."""

    def __init__(self, name: str, status: int, expected: tuple[int, ...]) -> None:
        want = ", ".join(map(str, expected)) if expected else "a status in --ok"
        super().__init__(f"{name}: got status {status}, expected {want}")
        self.name = name
        self.status = status
        self.expected = expected


class Headers(Mapping[str, str]):
    """Response headers, looked up without regard to case; repeated ones joined by ', '."""

    __slots__ = ("_d",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        d: dict[str, tuple[str, str]] = {}
        for name, value in raw:
            n, v = name.decode("latin-1"), value.decode("latin-1")
            key = n.lower()
            d[key] = (d[key][0], d[key][1] + ", " + v) if key in d else (n, v)
        self._d = d

    def __getitem__(self, name: str) -> str:
        return self._d[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (n for n, _ in self._d.values())

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


class Response:
    """A complete response: ``status``, ``headers``, ``content`` (bytes), ``text``,
    ``json()``, and ``expect(*statuses)``."""

    __slots__ = ("_headers", "_ok", "_raw", "_step", "content", "name", "status")

    def __init__(
        self, status: int, raw: bytes, content: bytes, name: str, step: Tally, ok: bool
    ) -> None:
        self.status = status
        self._raw = raw  # the response's first bytes: its head is parsed when first read
        self._headers: Headers | None = None  # built when first read
        self.content = content
        self.name = name
        self._step = step
        self._ok = ok  # counted as a success

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(head_fields(self._raw))
        return self._headers

    @property
    def text(self) -> str:
        ctype = self.headers.get("content-type", "")
        charset = "utf-8"
        for part in ctype.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        c = self.content
        first = c[:4]
        if b"\x00" in first or first[:1] >= b"\x80":  # a BOM, or UTF-16/32
            return _json.loads(c)
        # UTF-8 (json.loads' detect_encoding says so for these bytes): JSONDecoder.decode
        # and raw_decode, inlined, with their errors
        s = c.decode("utf-8", "surrogatepass")
        try:
            obj, end = _scan(s, _ws(s, 0).end())
        except StopIteration as err:
            raise _json.JSONDecodeError("Expecting value", s, err.value) from None
        end = _ws(s, end).end()
        if end != len(s):
            raise _json.JSONDecodeError("Extra data", s, end)
        return obj

    def expect(self, *statuses: int) -> Response:
        """This response, if its status is one of ``statuses`` (or in --ok when none are
        given); else ExpectationFailed, and the step counts an ``expect`` error instead
        of its success."""
        good = self.status in statuses if statuses else self._step.ok[self.status]
        if good:
            return self
        if self._ok:
            self._step.successes -= 1
            self._step.errors["expect"] += 1
            self._ok = False
        raise ExpectationFailed(self.name, self.status, statuses)

    def __repr__(self) -> str:
        return f"<Response {self.name} [{self.status}]>"


def head_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of the final response whose bytes start ``head`` (interim 1xx
    responses before it skipped), as (name, value) pairs in order."""
    start = 0
    while True:
        end = head.find(b"\r\n\r\n", start)
        block = head[start:] if end < 0 else head[start:end]
        if block[9:10] != b"1" or end < 0:  # "HTTP/1.1 1xx": an interim response
            break
        start = end + 4
    out: list[tuple[bytes, bytes]] = []
    for line in block.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out.append((name.strip(), value.strip()))
    return out
