"""`hitd` flags and environment: bad input names the flag and exits 2, never a traceback."""

from __future__ import annotations

import pytest

from hitpool._errors import SpecError
from hitpool.hitd.cli import build_parser, main, parse_config
from hitpool.hitd.server import DEFAULT_STORE


def test_defaults() -> None:
    c = parse_config([], {})
    assert (c.host, c.port, c.store) == ("127.0.0.1", 8080, "sqlite:///./hitd.db")
    assert c.store == DEFAULT_STORE
    assert (c.workers, c.queue_size, c.token, c.tasks, c.allow_targets) == (
        16,
        100_000,
        None,
        (),
        (),
    )
    assert c.max_body_bytes == 1024 * 1024
    assert c.retention_s == 7 * 24 * 3600.0  # 168h


@pytest.mark.parametrize(
    ("argv", "env", "seconds"),
    [
        (["--retention", "720h"], {}, 720 * 3600.0),
        (["--retention", "0"], {}, 0.0),  # keep finished jobs forever
        (["--retention", "90"], {}, 90.0),
        ([], {"HITD_RETENTION": "30m"}, 1800.0),
        ([], {"HITD_RETENTION": "0"}, 0.0),
        ([], {"HITD_RETENTION": ""}, 7 * 24 * 3600.0),
        (["--retention", "1h"], {"HITD_RETENTION": "30m"}, 3600.0),  # the flag wins
    ],
)
def test_retention(argv, env, seconds) -> None:
    assert parse_config(argv, env).retention_s == seconds


def test_environment_and_flags() -> None:
    env = {"MAX_WORKERS": "3", "MAX_QUEUE": "7", "HITD_STORE": "memory://", "HITD_TOKEN": "t"}
    c = parse_config([], env)
    assert (c.workers, c.queue_size, c.store, c.token) == (3, 7, "memory://", "t")
    c = parse_config(
        [
            "--workers",
            "5",
            "--queue-size",
            "9",
            "--store",
            "sqlite:////tmp/x.db",
            "--token",
            "u",
            "--tasks",
            "a.b",
            "--tasks",
            "c",
            "--allow-target",
            "10.0.0.5",
            "--port",
            "0",
        ],
        env,
    )
    assert (c.workers, c.queue_size, c.store, c.token, c.port) == (
        5,
        9,
        "sqlite:////tmp/x.db",
        "u",
        0,
    )
    assert (c.tasks, c.allow_targets) == (("a.b", "c"), ("10.0.0.5",))


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--workers", "-1"], "--workers"),
        (["--workers", "many"], "--workers"),
        (["--queue-size", "-1"], "--queue-size"),
        (["--port", "70000"], "--port"),
        (["--grace", "soon"], "--grace"),
        (["--lease", "0"], "--lease"),
        (["--max-body", "0"], "--max-body"),
        (["--retention", "7d"], "--retention"),
        (["--retention=-1h"], "--retention"),
        (["--retention", "soon"], "--retention"),
        (["--bogus"], "--bogus"),
    ],
)
def test_bad_flags_name_the_flag_and_exit_2(argv, flag, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err
    assert "Traceback" not in err


def test_a_bad_retention_says_how_to_write_one(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--retention", "7d"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "hitd: error: argument --retention: '7d' is not a duration" in err
    assert "--retention 168h" in err and "0 to keep finished jobs forever" in err


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"MAX_WORKERS": "x"}, "MAX_WORKERS"),
        ({"MAX_QUEUE": "0"}, "MAX_QUEUE"),
        ({"HITD_RETENTION": "7d"}, "HITD_RETENTION"),
    ],
)
def test_bad_environment_names_the_variable(env, name, monkeypatch, capsys) -> None:
    with pytest.raises(SpecError) as exc:
        parse_config([], env)
    assert exc.value.field == name
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main([]) == 2
    assert name in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--store", "ftp://somewhere"], "--store"),
        (["--store", "sqlite://relative.db"], "--store"),
        (["--tasks", "no_such_module_for_hitd_tests"], "--tasks"),
        (["--token", " "], "--token"),
    ],
)
def test_bad_values_found_at_startup_exit_2(argv, flag, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hitd: error: {flag}:"), err
    assert "Traceback" not in err


def test_help_says_memory_jobs_die_with_the_process() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "memory:// (jobs die with the process)" in text
    for flag in (
        "--workers",
        "--queue-size",
        "--store",
        "--tasks",
        "--token",
        "--allow-target",
        "--retention",
    ):
        assert flag in text
    for env in ("MAX_WORKERS", "MAX_QUEUE", "HITD_STORE", "HITD_TOKEN", "HITD_RETENTION"):
        assert env in text


def test_a_store_that_cannot_open_exits_1(capsys, tmp_path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "h.db"
    assert main(["--store", f"sqlite:///{missing}", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hitd: error: cannot start:"), err
    assert "does not exist" in err


def test_workers_0_is_an_intake_only_on_a_shared_store() -> None:
    url = "postgresql://u@127.0.0.1:5432/db"
    assert parse_config(["--workers", "0", "--store", url], {}).workers == 0
    assert parse_config(["--store", url], {"MAX_WORKERS": "0"}).workers == 0
    with pytest.raises(SpecError) as e:
        parse_config(["--workers", "0"], {})  # the default SQLite file: nobody else runs them
    assert e.value.field == "store" and "postgresql://" in e.value.message


def test_worker_role_flags() -> None:
    from hitpool.hitd.cli import parse_worker_config

    url = "postgresql://u@127.0.0.1:5432/db"
    c = parse_worker_config(["--store", url, "--workers", "3", "--tasks", "m"], {})
    assert (c.store, c.workers, c.tasks) == (url, 3, ("m",))
    assert parse_worker_config([], {"HITD_STORE": url, "MAX_WORKERS": "5"}).workers == 5
    for argv in ([], ["--store", "sqlite:///x.db"], ["--store", "memory://"]):
        with pytest.raises(SpecError) as e:
            parse_worker_config(argv, {})
        assert e.value.field in ("--store", "store")


def test_worker_role_bad_input_is_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["worker", "--store", "sqlite:///x.db"]) == 2
    assert "--store" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["worker", "--store", "postgresql://u@h/db", "--workers", "0"])
    assert e.value.code == 2
    assert "--workers" in capsys.readouterr().err
