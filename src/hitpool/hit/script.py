"""``@scenario`` and loading a script (``hit -f script.py``).

    from hitpool.hit import scenario

    @scenario(weight=3)
    async def checkout(s): ...      # one call = one iteration

    @scenario                       # weight 1
    async def browse(s): ...

Loading a script imports it as a module (its top level runs once per process: feeders
are made there) and collects the scenarios it declared, in order. Which scenario
iteration ``i`` of a process runs is fixed by ``i`` alone (`Mix`): the weights hold over
every cycle of ``sum(weights)`` iterations.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from .._errors import SpecError

__all__ = ["Mix", "Scenario", "load_script", "scenario"]

ScenarioFn = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    fn: ScenarioFn
    weight: int


_declared: list[Scenario] = []  # filled while a script is imported


@overload
def scenario(fn: ScenarioFn, /) -> ScenarioFn: ...
@overload
def scenario(*, weight: int = 1, name: str | None = None) -> Callable[[ScenarioFn], ScenarioFn]: ...
def scenario(
    fn: ScenarioFn | None = None, /, *, weight: int = 1, name: str | None = None
) -> ScenarioFn | Callable[[ScenarioFn], ScenarioFn]:
    """Declare an ``async def f(s)`` as a scenario; ``weight`` is its share of iterations."""
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise SpecError("script", f"@scenario(weight=) takes a whole number >= 1, got {weight!r}")

    def declare(f: ScenarioFn) -> ScenarioFn:
        if not asyncio.iscoroutinefunction(f):
            raise SpecError(
                "script", f"@scenario {getattr(f, '__name__', f)!r} must be an 'async def f(s)'"
            )
        _declared.append(Scenario(name or f.__name__, f, weight))
        return f

    return declare(fn) if fn is not None else declare


def load_script(path: str) -> tuple[Scenario, ...]:
    """Import the script and return its scenarios; SpecError('script', ...) naming what is
    wrong (no such file, an exception at import with its line, no @scenario)."""
    import importlib.util  # here: what a single-URL run never needs is not imported for it
    import traceback

    p = Path(path)
    if not p.is_file():
        raise SpecError("script", f"cannot read {path!r}: no such file; give a Python script")
    name = f"hit_script_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise SpecError("script", f"{path!r} is not a Python file; give a .py script")
    module = importlib.util.module_from_spec(spec)
    here = str(p.resolve().parent)
    if here not in sys.path:  # the script may import modules that sit beside it
        sys.path.insert(0, here)
    del _declared[:]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SpecError:
        raise
    except BaseException as exc:
        if not isinstance(exc, Exception):
            raise
        where = traceback.extract_tb(exc.__traceback__)
        line = next((f.lineno for f in reversed(where) if f.filename == str(p)), None)
        at = f" at line {line}" if line else ""
        raise SpecError(
            "script", f"{path!r} raised {type(exc).__name__}{at} when imported: {exc}"
        ) from None
    finally:
        sys.modules.pop(name, None)
    found = tuple(_declared)
    del _declared[:]
    if not found:
        raise SpecError(
            "script", f"{path!r} declares no scenario; decorate an 'async def f(s)' with @scenario"
        )
    names = [s.name for s in found]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise SpecError("script", f"two scenarios are named {dup!r}; give one a name=")
    return found


class Mix:
    """Which scenario iteration ``i`` runs: a smooth weighted round robin over one cycle
    of ``sum(weights)`` iterations, so every window of a cycle holds each scenario in
    proportion to its weight (3:1 gives a a b a, not a a a b)."""

    __slots__ = ("cycle", "scenarios")

    def __init__(self, scenarios: tuple[Scenario, ...]) -> None:
        self.scenarios = scenarios
        total = sum(s.weight for s in scenarios)
        current = [0] * len(scenarios)
        cycle: list[int] = []
        for _ in range(total):
            for k, s in enumerate(scenarios):
                current[k] += s.weight
            best = max(range(len(scenarios)), key=lambda k: current[k])
            current[best] -= total
            cycle.append(best)
        self.cycle = cycle

    def pick(self, i: int) -> Scenario:
        return self.scenarios[self.cycle[i % len(self.cycle)]]
