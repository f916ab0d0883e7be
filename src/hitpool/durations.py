"""Durations as people write them -> seconds: ``2.5``, ``"250ms"``, ``"10s"``, ``"1m30s"``.

Go's `time.ParseDuration` syntax (the seeds are Go, and so are hey's and wrk's users), plus a
bare number meaning seconds. `parse_seconds` is the one parser, under one name, for every flag
and field that takes a duration: hit's ``-z``/``-t``/``--assert``, hitd's ``--retention``, a
job's ``delay`` and the ``hello`` task's ``delay``; each caller passes its field and its bound.
Pure: no clock, no I/O; bad input raises `SpecError` naming the field and the fix.
"""

from __future__ import annotations

import math
import re

from ._errors import SpecError

__all__ = ["parse_seconds"]

_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

# Texts that parsed -> their seconds, before the range checks (which run on every call).
# Clients of hitd send the same few delays ("5s", "1h") with every job; bounded, so that
# distinct texts cannot grow it without end.
_PARSED: dict[str, float] = {}
_PARSED_MAX = 4096


def parse_seconds(value: object, field: str, *, max_s: float = math.inf) -> float:
    """A number of seconds, or a duration string, -> seconds in ``[0, max_s]``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SpecError(field, 'must be a duration like "5s", "250ms" or a number of seconds')
    if isinstance(value, str):
        parsed = _PARSED.get(value)
        if parsed is None:
            # As in Go, "7 s" is refused; white space around the whole is not an error.
            parsed = _parse_text(value.strip(), field)
            if len(_PARSED) < _PARSED_MAX:
                _PARSED[value] = parsed
        seconds = parsed
    else:
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float, e.g. 400 digits of JSON
            raise SpecError(field, "must be zero or more seconds, got a number out of range")
    if not math.isfinite(seconds) or seconds < 0:
        raise SpecError(field, f"must be zero or more seconds, got {value!r}")
    if seconds > max_s:
        raise SpecError(field, f"must be at most {max_s:g} seconds, got {value!r}")
    return seconds


def _parse_text(text: str, field: str) -> float:
    try:
        return float(text)  # "2.5" means seconds, like a bare number
    except ValueError:
        pass
    pos, seconds = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(text):
        raise SpecError(
            field, f'{text!r} is not a duration: write e.g. "10s", "250ms", "1m30s" or 2.5'
        )
    return seconds
