"""Tasks: the registry, `@task`, `load_modules`, argument checks, the built-ins hello and hit."""

from __future__ import annotations

import logging
import os
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from hitpool import SpecError
from hitpool.hitd import TaskError, UnknownTask, tasks
from hitpool.hitd.tasks import GLOBAL, Registry, current_worker, load_modules, task


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# -- registering -----------------------------------------------------------------------------


def test_the_decorator_registers_globally_with_or_without_options() -> None:
    name = unique("plain")

    async def job(x: int) -> int:
        return x

    assert task(name=name)(job) is job  # the function is returned unchanged

    @task
    def unique_bare_task_7c1f() -> None: ...

    reg = Registry()
    assert reg.get(name).fn is job and reg.get(name).is_async
    assert reg.get(name).timeout is None
    bare = reg.get("unique_bare_task_7c1f")
    assert bare.is_async is False
    assert name in reg.names() and "hello" in reg.names() and "hit" in reg.names()
    # A registry that leaves the global tasks out does not see them.
    with pytest.raises(UnknownTask) as e:
        Registry(include_global=False).get(name)
    assert e.value.task == name


def test_timeout_option_and_bad_timeouts() -> None:
    reg = Registry(include_global=False)

    @reg.task(timeout=2.5, name="limited")
    async def f() -> None: ...

    assert reg.get("limited").timeout == 2.5
    for bad in (0, -1, True, "10"):
        with pytest.raises(TaskError, match="timeout"):
            reg.task(timeout=bad)(f)  # type: ignore[arg-type]


def test_a_name_taken_by_another_function_is_an_error() -> None:
    reg = Registry(include_global=False)

    @reg.task(name="dup")
    def one() -> None: ...

    reg.task(name="dup")(one)  # the same function again (a reload) is fine
    with pytest.raises(TaskError, match="taken"):

        @reg.task(name="dup")
        def two() -> None: ...


def test_load_modules_imports_task_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = unique("myjobs")
    name = unique("send")
    (tmp_path / f"{mod}.py").write_text(
        textwrap.dedent(
            f"""
            from hitpool.hitd.tasks import task

            @task(name="{name}", timeout=3)
            async def send(to: str) -> str:
                return "sent to " + to
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        names = load_modules([mod])
        assert name in names
        assert Registry().get(name).timeout == 3
    finally:
        sys.modules.pop(mod, None)
    with pytest.raises(SpecError) as e:
        load_modules(["no_such_module_for_hitd"])
    assert e.value.field == "tasks" and "no_such_module_for_hitd" in e.value.message


# -- checking arguments ----------------------------------------------------------------------


@pytest.fixture
def reg() -> Registry:
    r = Registry(include_global=False)

    @r.task
    async def typed(
        n: int, ratio: float = 1.0, label: str | None = None, flag: bool = False
    ) -> None: ...

    @r.task
    def loose(a: Any, *, b: list[int] | None = None, **extra: Any) -> None: ...

    return r


@pytest.mark.parametrize(
    ("task_name", "args", "field"),
    [
        ("typed", {}, "args.n"),  # required
        ("typed", {"n": "7"}, "args.n"),  # wrong type
        ("typed", {"n": True}, "args.n"),  # a bool is not an int here
        ("typed", {"n": 1, "ratio": "x"}, "args.ratio"),
        ("typed", {"n": 1, "ratio": float("nan")}, "args.ratio"),
        ("typed", {"n": 1, "label": 3}, "args.label"),
        ("typed", {"n": 1, "flag": 1}, "args.flag"),
        ("typed", {"n": 1, "nope": 1}, "args.nope"),  # unknown argument
        ("loose", {}, "args.a"),
        ("loose", {"a": 1, "b": {"x": 1}}, "args.b"),
        ("hello", {"delay": "soon"}, "args.delay"),
        ("hello", {"delay": -1}, "args.delay"),
        ("hello", {"delay": 7200}, "args.delay"),
        ("hello", {"name": 5}, "args.name"),
        ("hello", {"nme": "typo"}, "args.nme"),
    ],
)
def test_bad_arguments_name_the_field(
    reg: Registry, task_name: str, args: dict[str, Any], field: str
) -> None:
    with pytest.raises(SpecError) as e:
        reg.check(task_name, args)
    assert e.value.field == field


@pytest.mark.parametrize(
    ("task_name", "args"),
    [
        ("typed", {"n": 1}),
        ("typed", {"n": 1, "ratio": 2, "label": None, "flag": True}),  # an int is a float
        ("loose", {"a": object(), "anything": 1}),  # **extra takes the rest
        ("hello", {}),
        ("hello", {"name": "x", "delay": "1m30s"}),
        ("hello", {"delay": 0.25}),
        ("hello", {"delay": "250ms"}),
    ],
)
def test_good_arguments_pass(reg: Registry, task_name: str, args: dict[str, Any]) -> None:
    reg.check(task_name, args)


def test_unknown_task(reg: Registry) -> None:
    with pytest.raises(UnknownTask):
        reg.check("nope", {})


# -- the built-ins ---------------------------------------------------------------------------


async def test_hello_waits_and_greets_as_its_worker(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "hitpool.hitd.tasks")
    token = current_worker.set(7)
    try:
        assert await tasks.hello("Grace", "1ms") == "Hello, Grace!"
    finally:
        current_worker.reset(token)
    assert caplog.messages == ["worker7: Hello, Grace!"]


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("http://127.0.0.1:8080/", (), True),
        ("http://127.8.9.10/", (), True),  # all of 127.0.0.0/8 is loopback
        ("http://localhost:9/x", (), True),
        ("http://[::1]:8080/", (), True),
        ("http://example.com/", (), False),
        ("http://10.0.0.1/", (), False),
        ("http://169.254.169.254/latest/meta-data", (), False),  # no cloud metadata relay
        ("http://example.com/", ("example.com",), True),
        ("https://EXAMPLE.com/", ("example.com",), True),
        ("http://other.example.com/", ("example.com",), False),
        ("http://10.0.0.1:80/", ("10.0.0.1",), True),
    ],
)
def test_hit_targets_loopback_unless_allowed(url: str, allowed: tuple[str, ...], ok: bool) -> None:
    reg = Registry(include_global=False, allowed_targets=allowed)
    if ok:
        reg.check("hit", {"url": url, "requests": 10})
    else:
        with pytest.raises(SpecError) as e:
            reg.check("hit", {"url": url, "requests": 10})
        assert e.value.field == "args.url" and "--allow-target" in e.value.message


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({}, "args.url"),
        ({"url": "ftp://127.0.0.1/"}, "args.url"),
        ({"url": "http://127.0.0.1/", "requests": 0}, "args.requests"),
        ({"url": "http://127.0.0.1/", "concurrency": "many"}, "args.concurrency"),
        ({"url": "http://127.0.0.1/", "processes": (os.cpu_count() or 1) + 1}, "args.processes"),
        ({"url": "http://127.0.0.1/", "bogus": 1}, "args.bogus"),
    ],
)
def test_hit_spec_errors_name_the_field(args: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as e:
        Registry(include_global=False).check("hit", args)
    assert e.value.field == field


def test_global_registry_holds_no_builtins() -> None:
    # Built-ins live in each Registry, so an app cannot shadow `hit` by accident.
    with pytest.raises(UnknownTask):
        GLOBAL.get("hit")
