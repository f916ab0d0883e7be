"""``hit --targets FILE``: many URLs in one run, one ``METHOD URL [@body-file]`` per line.

    GET http://127.0.0.1:8080/
    POST http://127.0.0.1:8080/jobs @job.json      # the body read from job.json
    # a comment; blank lines are skipped

A body file's path is relative to the targets file's directory. Each request goes to the
next line (``--targets-order sequential``, each process in file order) or to a line
drawn at random (``random``, seeded by the process index: reruns repeat). Each line is a
step named ``METHOD URL``, so the summary has one table row per line. The requests go
through the scenario machinery (one iteration, one request): pooled keep-alive
connections per origin, the open model under --rps/--stage, -n counting requests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import SpecError
from .script import Scenario
from .spec import _TOKEN, parse_url

__all__ = ["ORDERS", "Line", "parse_targets", "read_targets", "targets_scenario"]

ORDERS = ("sequential", "random")


@dataclass(frozen=True, slots=True)
class Line:
    method: str
    url: str
    body: bytes = b""

    @property
    def name(self) -> str:
        return f"{self.method} {self.url}"


def parse_targets(text: str, base: Path) -> tuple[Line, ...]:
    """The lines of a targets file (``base``: where body files are looked up)."""
    out: list[Line] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].startswith("@")):
            raise SpecError(
                "targets", f"line {n}: {raw!r}: write METHOD URL, or METHOD URL @body-file"
            )
        method, url = parts[0].upper(), parts[1]
        if not _TOKEN.match(method):
            raise SpecError("targets", f"line {n}: {parts[0]!r} is not an HTTP method")
        try:
            parse_url(url)
        except SpecError as e:
            raise SpecError("targets", f"line {n}: {e.message}") from None
        body = b""
        if len(parts) == 3:
            path = base / parts[2][1:]
            try:
                body = path.read_bytes()
            except OSError as e:
                raise SpecError(
                    "targets", f"line {n}: cannot read the body file {str(path)!r} ({e.strerror})"
                ) from None
        out.append(Line(method, url, body))
    if not out:
        raise SpecError("targets", "the file holds no target; write one METHOD URL per line")
    return tuple(out)


def read_targets(path: str) -> tuple[Line, ...]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError("targets", f"cannot read {path!r} ({e.strerror}); give a file") from None
    except UnicodeDecodeError:
        raise SpecError("targets", f"{path!r} is not UTF-8 text") from None
    return parse_targets(text, Path(path).resolve().parent)


def targets_scenario(lines: tuple[Line, ...], order: str, part: tuple[int, int]) -> Scenario:
    """The one scenario of a --targets run: each iteration sends one line's request."""
    if order not in ORDERS:
        raise SpecError("targets_order", f"{order!r}: one of {', '.join(ORDERS)}")
    k, p = part
    rng = random.Random(f"targets:{k}:{p}")
    state = {"next": k % len(lines)}  # processes start on different lines

    async def one(s: Any) -> None:
        if order == "random":
            line = lines[rng.randrange(len(lines))]
        else:
            i = state["next"]
            state["next"] = (i + 1) % len(lines)
            line = lines[i]
        await s.request(line.method, line.url, data=line.body or None, name=line.name)

    return Scenario("targets", one, 1)
