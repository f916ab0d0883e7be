"""Strict JSON at the door: what hitd accepts is what every store can write and read back.

RFC 8259 JSON has no NaN or Infinity and no unpaired surrogates (its strings are Unicode
text, and UTF-8 has no encoding for a lone surrogate); Python's decoder accepts all three.
Stored, one such value broke every later claim of a SQLite server (its `json()` refuses NaN)
and made `GET /jobs/{id}` answer a bare `NaN`. Nesting is bounded by one number,
`MAX_DEPTH`, checked here and far below what the stores' encoders recurse through (about a
thousand levels, where a RecursionError became a 503). Each is a `SpecError` naming the
field where it was found: ``args.headers.X``, ``[3].args.ok[0]``.

The check is paid only when it can find something: the document is walked when the body
contains ``NaN``, ``Infinity``, a ``\\u`` escape (the only way to write a lone surrogate that
UTF-8 decoding lets through) or more brackets than `MAX_DEPTH`.
"""

from __future__ import annotations

import json
import json.scanner
import re
from typing import Any

from .._errors import SpecError

__all__ = ["MAX_DEPTH", "decode"]

# Containers nested in one body, the body itself included: [{"args": {"x": [..]}}] is 4.
# A job's arguments need a handful; 64 leaves room and stays far below the ~1000 levels at
# which Python's JSON encoder and decoder run out of stack.
MAX_DEPTH = 64


class _NonFinite:
    """What the decoder makes of NaN, Infinity and -Infinity: found by the walk, refused."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


_DECODER = json.JSONDecoder(parse_constant=_NonFinite)
# The C scanner under JSONDecoder: decode() wraps it in two regex matches for whitespace,
# which cost as much as scanning a small job. Bodies are stripped of JSON whitespace first.
_SCAN = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]
_JSON_WS = " \t\n\r"
_TOO_DEEP = f"JSON nested deeper than {MAX_DEPTH} levels"


def decode(body: bytes) -> Any:
    """A JSON body -> the document, or SpecError naming the field that is not strict JSON
    ("body" when the text itself is malformed). A leading BOM is ignored (RFC 8259 8.1)."""
    try:
        # decode() skips json.loads' encoding sniffing: JSON on the wire is UTF-8 (RFC 8259).
        text = body.decode()
        if text.startswith("\ufeff"):
            text = text[1:]
        stripped = text.strip(_JSON_WS)
        try:
            doc, end = _SCAN(stripped, 0)
        except StopIteration:  # no JSON value at all: let decode() word the error
            end = -1
        if end != len(stripped):
            _DECODER.decode(text)  # raises, with the position of what is wrong
            raise ValueError("malformed JSON")  # pragma: no cover - decode() raised above
    except (ValueError, UnicodeDecodeError) as e:
        raise SpecError("body", f"malformed JSON: {e}") from None
    except RecursionError:  # the C scanner recurses per level: "[[[[..." runs out of stack
        raise SpecError(_field(_cut(_deep_path(text))), _TOO_DEEP) from None
    surrogates = b"\\u" in body
    if surrogates or b"NaN" in body or b"Infinity" in body:
        _check(doc, surrogates)
    elif body.count(b"[") + body.count(b"{") > MAX_DEPTH and not _shallow(doc, MAX_DEPTH - 1):
        _check(doc, False)  # to name the field
    return doc


def _shallow(value: Any, left: int) -> bool:
    """Whether the containers in `value` (a dict or list) nest at most `left` more levels.
    Recursive, but at most MAX_DEPTH deep; the fast path of the depth check (a batch of
    jobs always has more brackets than MAX_DEPTH)."""
    for item in value.values() if value.__class__ is dict else value:
        if (item.__class__ is dict or item.__class__ is list) and (
            not left or not _shallow(item, left - 1)
        ):
            return False
    return True


def _lone_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _field(path: list[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "body"


def _cut(path: list[str | int]) -> list[str | int]:
    """The field a too-deep document is refused for: where the nesting begins (the job's
    argument, a few levels down), not the whole chain of keys past the limit."""
    return path[:3] if path and isinstance(path[0], int) else path[:2]


# The tokens that give a document its shape: strings (keys among them) and punctuation;
# numbers and literals between them do not matter to the path.
_SHAPE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]')


def _deep_path(text: str) -> list[str | int]:
    """The path to the first container nested past MAX_DEPTH, read from the text without
    recursion: for a document too deep for the decoder, which names the same field as
    `_check` does for one it could decode."""
    # One entry per open container: its key or index of the value being read, and for an
    # object whether a key comes next.
    stack: list[list[Any]] = []
    for m in _SHAPE.finditer(text):
        tok = m.group()
        if tok == "[" or tok == "{":
            if len(stack) == MAX_DEPTH:
                break
            stack.append([0, False] if tok == "[" else ["", True])
        elif tok == "]" or tok == "}":
            if stack:
                stack.pop()
        elif not stack:
            continue
        elif tok == ",":
            top = stack[-1]
            if isinstance(top[0], int):
                top[0] += 1
            else:
                top[1] = True
        elif tok == ":":
            stack[-1][1] = False
        elif stack[-1][1]:  # a string where a key comes
            try:
                stack[-1][0] = json.loads(tok)
            except ValueError:
                stack[-1][0] = tok
    return [entry[0] for entry in stack]


def _check(doc: Any, surrogates: bool) -> None:
    """Walk `doc` (iteratively: it may be deep) and raise at the first value that is not
    strict JSON, naming its path."""
    # (value, path, depth): depth counts the containers from the root down to the value.
    stack: list[tuple[Any, list[str | int], int]] = [(doc, [], 1)]
    while stack:
        value, path, depth = stack.pop()
        cls = value.__class__
        if cls is dict or cls is list:
            if depth > MAX_DEPTH:
                # The field is where the nesting begins (a few levels down), not the
                # whole chain of keys that goes past the limit.
                raise SpecError(_field(_cut(path)), _TOO_DEEP)
            items = value.items() if cls is dict else enumerate(value)
            for key, item in items:
                if surrogates and isinstance(key, str) and _lone_surrogate(key):
                    raise SpecError(_field([*path, ascii(key)]), _SURROGATE)
                icls = item.__class__
                if icls is dict or icls is list or icls is _NonFinite:
                    stack.append((item, [*path, key], depth + 1))
                elif surrogates and icls is str and _lone_surrogate(item):
                    raise SpecError(_field([*path, key]), _SURROGATE)
        elif cls is _NonFinite:
            raise SpecError(
                _field(path), f"{value.text} is not JSON: send a finite number (or a string)"
            )
        elif surrogates and cls is str and _lone_surrogate(value):
            raise SpecError(_field(path), _SURROGATE)


_SURROGATE = (
    "contains an unpaired surrogate (\\ud800-\\udfff), which is not Unicode text: "
    "escape a character outside the BMP as a pair, e.g. \\ud83d\\ude00"
)
