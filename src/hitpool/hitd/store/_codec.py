"""How the SQL stores (SQLite, PostgreSQL) write a job's JSON columns and read a row back.

Invariant: what a store writes is strict JSON (RFC 8259), so it is always readable back,
by Python and by SQLite's JSON functions: no NaN or Infinity (SQLite refuses them, and
`GET /jobs/{id}` would answer a token that is not JSON), no raw lone surrogate (ASCII
escapes only: one cannot be encoded as UTF-8), no NUL in a text column (`storable`).

- arguments (`args_json`) come from a request's JSON, so they are JSON already; one that is
  not (a NaN from a caller of the library) is refused with ValueError, never stored;
- a task's result (`result_json`) is whatever the task returned: what JSON cannot hold (a
  NaN, a cycle, an object) is stored as its repr, a string;
- a row is read back by `decode_row`, which never raises: a row whose arguments cannot be
  decoded (written by something else, or damaged) comes back with the reason, so that a
  claim fails that job alone instead of every claim after it.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from typing import Any

from .base import JobRecord, storable

__all__ = [
    "COLUMNS",
    "args_json",
    "decode_row",
    "dumps",
    "dumps_strict",
    "loads",
    "not_args",
    "result_json",
    "row_record",
    "storable",
]

# The columns of a job row, in this order in both SQL stores: one row -> record rule.
COLUMNS = (
    "id, task, args, status, attempts, max_attempts, result, error, created_at, "
    "started_at, finished_at, run_at, key, lease_until, worker, runs"
)

# Strict and ASCII; default=repr: a task result that is not JSON (a set, an object) becomes
# its repr rather than failing the batch it is in.
dumps = json.JSONEncoder(separators=(",", ":"), default=repr, allow_nan=False).encode


def _batch_encoder() -> Callable[[Any], str]:
    """The encoder of the JSON batches, made once: JSONEncoder.encode() builds its C encoder
    anew at every call and tracks every list and dict for cycles, where batches hold parsed
    JSON and task results. A result with a cycle raises RecursionError here and its batch
    takes the rows path (see `result_json`). Strict (NaN and Infinity raise ValueError) and
    ASCII, as `dumps`."""
    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    if make is None:  # a Python without the _json accelerator
        return dumps
    esc = json.encoder.encode_basestring_ascii
    enc = make(None, repr, esc, None, ":", ",", False, False, False)
    return lambda obj: "".join(enc(obj, 0))


dumps_strict = _batch_encoder()


def args_json(args: Any) -> str:
    """A job's arguments as strict JSON. Raises ValueError for what JSON cannot hold (NaN,
    Infinity, nesting too deep to encode): such a job is refused, never stored."""
    try:
        return dumps(args)
    except RecursionError as e:
        raise ValueError("args are nested too deeply to store") from e
    except ValueError as e:
        raise ValueError(f"args are not JSON: {e}") from e


def result_json(value: Any) -> str:
    """A task's result as JSON for one row; what JSON cannot hold (NaN, a cycle) as its repr."""
    try:
        return dumps(value)
    except (ValueError, RecursionError):
        return dumps(repr(value))


_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def loads(text: str) -> Any:
    """json.loads for text we wrote ourselves (no surrounding whitespace): the C scanner
    directly, without the regex pass json.loads makes for whitespace."""
    try:
        return _scan(text, 0)[0]
    except StopIteration:
        return json.loads(text)  # let json raise its usual error


def _strict(text: str) -> Any:
    return json.loads(text, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def not_args(value: Any) -> str:
    """Why a decoded `args` column is not a job's arguments (they are a JSON object)."""
    return (
        "its args in the store cannot be decoded: an object was expected, "
        f"got {type(value).__name__}"
    )


def decode_row(r: tuple[Any, ...]) -> tuple[JobRecord, str | None]:
    """A row (COLUMNS) as a record, and why its arguments cannot be used (None when they
    can). Never raises: undecodable arguments come back as {} with the reason, an
    undecodable result as its stored text."""
    bad = None
    # Declared Any: the compiled build would type `args` as the dict assigned below, and a
    # decoded list read as one raised TypeError instead of coming back with the reason.
    args: Any
    try:
        args = _strict(r[2])
    except (ValueError, TypeError, RecursionError) as e:
        args, bad = {}, f"its args in the store cannot be decoded: {e}"
    if not isinstance(args, dict):
        args, bad = {}, not_args(args)
    result = None
    if r[6] is not None:
        try:
            result = _strict(r[6])
        except (ValueError, TypeError, RecursionError):
            result = r[6]
    record = JobRecord(
        id=r[0],
        task=r[1],
        args=args,
        status=r[3],
        attempts=r[4],
        max_attempts=r[5],
        result=result,
        error=r[7],
        created_at=r[8],
        started_at=r[9],
        finished_at=r[10],
        run_at=r[11],
        key=r[12],
        lease_until=r[13],
        worker=r[14],
        runs=r[15],
    )
    return record, bad


def row_record(r: tuple[Any, ...]) -> JobRecord:
    """A row as a record, for reading (`get`): never raises (see `decode_row`)."""
    return decode_row(r)[0]
