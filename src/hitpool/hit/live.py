"""The live view of a run: what the CLI shows while the run goes on.

On a terminal a frame of a few lines is redrawn in place once a second: progress against
-n / -z, requests, errors, in flight, the rate and p50/p99 of the last second, and a
sparkline of the last seconds' p99. When stdout is not a terminal (a CI log) one plain
line a second goes to stderr, so stdout keeps only the summary; with --json, nothing.

Its cost is off the hot path: it reads the one snapshot a second the run already takes
for its timeline (`driver.tick`), in every process, and draws from the parent.

`Frame` is pure (numbers in, lines out, tested with tables); `Terminal` and `Lines` are
the thin shells that write them. A view whose stream fails (a closed pipe, a full disk)
goes quiet instead of raising: the view is a courtesy, and an error raised from it would
end the run's second-by-second ticks (a -o timeline with holes) or, under -p, the run.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from typing import TextIO

from .report import fmt_s, progress_line
from .spec import Spec
from .summary import Progress

__all__ = ["SPARKS", "Frame", "Lines", "Terminal", "sparkline"]

SPARKS = "▁▂▃▄▅▆▇█"
_HISTORY = 30  # seconds of p99 in the sparkline
_BAR = 20


def sparkline(values: list[float | None]) -> str:
    """One character per value, scaled to the largest; a second with no value is a space."""
    top = max((v for v in values if v is not None), default=0.0)
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif top <= 0:
            out.append(SPARKS[0])
        else:
            out.append(SPARKS[min(len(SPARKS) - 1, int(v / top * (len(SPARKS) - 1) + 0.5))])
    return "".join(out)


def _count(n: int) -> str:
    return f"{n:,}"


class Frame:
    """The lines of the terminal view for each second's `Progress` of a ``spec``."""

    __slots__ = ("_history", "_spec", "_width")

    def __init__(self, spec: Spec, width: int = 80) -> None:
        self._spec = spec
        self._width = 80
        self.resize(width)
        self._history: deque[float | None] = deque(maxlen=_HISTORY)

    def resize(self, width: int) -> None:
        """Fit the lines to ``width`` columns, however narrow: a line one column wider
        than the terminal wraps, and the redraw (so many lines up) then misses a row."""
        self._width = max(1, width)

    def lines(self, p: Progress) -> list[str]:
        """The frame after ``p``; every line fits the width (a wrapped line would break
        the redraw, which moves the cursor up by lines)."""
        self._history.append(p.p99_s)
        s = self._spec
        head = f"hit  {s.method} {s.target.shown}   -c {s.concurrency}"
        if s.processes > 1:
            head += f" -p {s.processes}"
        if s.rps is not None:
            head += f" --rps {s.rps:g}"
        err_pct = 100.0 * p.errors / p.requests if p.requests else 0.0
        last = "in the last second"
        p50 = fmt_s(p.p50_s) if p.p50_s is not None else "-"
        p99 = fmt_s(p.p99_s) if p.p99_s is not None else "-"
        known = [v for v in self._history if v is not None]
        out = [
            head,
            f"  progress  {self._progress(p)}",
            f"  requests  {_count(p.requests)}   errors {_count(p.errors)} ({err_pct:.2f}%)"
            f"   in flight {_count(p.in_flight)}",
            f"  rate      {p.rps:,.0f}/s {last}",
            f"  latency   p50 {p50}   p99 {p99}   {last}",
            f"  p99       {sparkline(list(self._history))}  last {len(self._history)}s"
            + (f", max {fmt_s(max(known))}" if known else ""),
        ]
        return [line[: self._width] for line in out]

    def _progress(self, p: Progress) -> str:
        s = self._spec
        parts = [f"{p.elapsed_s:.1f}s"]
        fractions = []
        if s.duration is not None:
            parts[0] += f" of {s.duration:g}s"
            fractions.append(p.elapsed_s / s.duration)
        if s.requests is not None:
            parts.append(f"{_count(p.requests)} of {_count(s.requests)} requests")
            fractions.append(p.requests / s.requests)
        done = min(1.0, max(fractions, default=0.0))
        filled = int(done * _BAR)
        bar = "█" * filled + "░" * (_BAR - filled)
        return f"{'   '.join(parts)}   {bar} {done * 100:3.0f}%"


def _write(out: TextIO | None, text: str) -> TextIO | None:
    """Write and flush ``text``; None (the view goes quiet) once ``out`` fails."""
    if out is None:
        return None
    try:
        out.write(text)
        out.flush()
    except (OSError, ValueError):  # ValueError: the stream was closed
        return None
    return out


class Terminal:
    """Draws each frame over the last one; ``close`` erases it, so the summary that follows
    stands alone on a clean screen."""

    __slots__ = ("_drawn", "_frame", "_out")

    def __init__(self, out: TextIO, frame: Frame) -> None:
        self._out: TextIO | None = out  # None once a write failed
        self._frame = frame
        self._drawn = 0  # lines of the frame on the screen, the cursor below them

    def show(self, p: Progress) -> None:
        if self._out is not None:
            # the terminal's width now: the window may have been resized since the last frame
            # (0: a terminal that does not know its size; the width given at the start holds)
            with contextlib.suppress(OSError, ValueError):
                if columns := os.get_terminal_size(self._out.fileno()).columns:
                    self._frame.resize(columns)
        lines = self._frame.lines(p)
        self._out = _write(self._out, self._erase() + "\n".join(lines) + "\n")
        self._drawn = len(lines)

    def close(self) -> None:
        if self._drawn:
            self._out = _write(self._out, self._erase())
            self._drawn = 0

    def _erase(self) -> str:
        # to the start of the frame's first line, then clear to the end of the screen
        return f"\033[{self._drawn}F\033[J" if self._drawn else ""


class Lines:
    """One plain line a second, for a log: no cursor movement, nothing erased."""

    __slots__ = ("_out",)

    def __init__(self, out: TextIO) -> None:
        self._out: TextIO | None = out  # None once a write failed

    def show(self, p: Progress) -> None:
        self._out = _write(self._out, progress_line(p) + "\n")

    def close(self) -> None:
        return None
