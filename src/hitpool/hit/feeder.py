"""Feeders: rows of test data handed to iterations, partitioned across ``-p`` processes.

    from hitpool.hit import feeder
    users = feeder.csv("users.csv")            # rows as dicts, the header row as keys
    row = users.next()

Process ``k`` of ``P`` owns rows ``k, k + P, k + 2P, ...`` (by their order in the file),
so the processes never hand out the same row in "queue" mode and split the others evenly:

    circular  (default) each process cycles through its rows in order
    queue     each row is handed out once over the whole run; then ``next()`` raises
              FeederEmpty (the iteration fails, counted under that name)
    shuffle   each process cycles through its rows in a fixed shuffled order
    random    each ``next()`` is a row drawn at random (with replacement)

A process whose share would be empty (fewer rows than processes) uses every row, except
in "queue" mode. The shuffles and draws are seeded by the process index: reruns repeat.
"""

from __future__ import annotations

import csv as _csv
import random as _random
from collections.abc import Sequence

from .._errors import HitpoolError, SpecError

__all__ = ["Feeder", "FeederEmpty", "csv", "rows"]

MODES = ("circular", "queue", "shuffle", "random")

_part = (0, 1)  # (k, P): this process's index and the number of processes


def set_part(k: int, p: int) -> None:
    """Called by the runner before a script is imported in process ``k`` of ``p``."""
    global _part
    _part = (k, p)


class FeederEmpty(HitpoolError):
    """A "queue" feeder handed out every row it had."""


class Feeder:
    """Rows for iterations; ``next()`` gives one (see the module docstring)."""

    __slots__ = ("_i", "_rng", "_rows", "mode", "name")

    def __init__(self, data: Sequence[dict[str, str]], mode: str, name: str) -> None:
        if mode not in MODES:
            raise SpecError("script", f"feeder mode {mode!r}: one of {', '.join(MODES)}")
        k, p = _part
        mine = list(data[k::p])
        if not mine and mode != "queue":
            mine = list(data)
        self._rng = _random.Random(f"{name}:{k}:{p}")
        if mode == "shuffle":
            self._rng.shuffle(mine)
        self._rows = mine
        self._i = 0
        self.mode = mode
        self.name = name

    def __len__(self) -> int:
        """The rows this process holds."""
        return len(self._rows)

    def next(self) -> dict[str, str]:
        rows = self._rows
        if self.mode == "random":
            if not rows:
                raise FeederEmpty(f"feeder {self.name!r} has no rows")
            return rows[self._rng.randrange(len(rows))]
        i = self._i
        if self.mode == "queue":
            if i >= len(rows):
                raise FeederEmpty(f"feeder {self.name!r} handed out all its rows")
            self._i = i + 1
            return rows[i]
        if not rows:
            raise FeederEmpty(f"feeder {self.name!r} has no rows")
        self._i = (i + 1) % len(rows)
        return rows[i]


def csv(path: str, mode: str = "circular", *, delimiter: str = ",") -> Feeder:
    """Rows of a CSV file (UTF-8) with a header line, as dicts."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            data = list(_csv.DictReader(f, delimiter=delimiter))
    except OSError as exc:
        raise SpecError("script", f"feeder.csv: cannot read {path!r} ({exc.strerror})") from None
    return Feeder(data, mode, path)


def rows(data: Sequence[dict[str, str]], mode: str = "circular", name: str = "rows") -> Feeder:
    """A feeder over rows given in the script."""
    return Feeder(list(data), mode, name)
