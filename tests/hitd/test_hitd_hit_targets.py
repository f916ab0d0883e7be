"""Where the built-in `hit` task may send its load (issue 10, finding 6): its results tell an
open port (answers, or `closed`) from a closed one (`connect_refused`), so the targets a
client may name decide what a client can learn about the server's host."""

from __future__ import annotations

import pytest

from hitpool._errors import SpecError
from hitpool.hitd.cli import main, parse_config
from hitpool.hitd.tasks import Registry, is_local, parse_target


def _refused(registry: Registry, url: str) -> SpecError:
    with pytest.raises(SpecError) as e:
        registry.check("hit", {"url": url, "requests": 1})
    assert e.value.field == "args.url"
    return e.value


@pytest.mark.parametrize("listener", ["0.0.0.0", "::", "10.1.2.3"])
def test_a_hitd_listening_beyond_loopback_does_not_probe_its_local_ports(listener: str) -> None:
    """Reachable from other hosts, hitd would scan its own loopback ports for them (a port
    only local clients can reach); there only listed targets are tested."""
    registry = Registry()
    registry.listeners = ((listener, 8123),)
    for url in ["http://127.0.0.1:22/", "http://localhost:5432/", "http://[::1]:6379/"]:
        assert "--allow-target" in _refused(registry, url).message


def test_allow_target_with_a_port_allows_that_port_only() -> None:
    registry = Registry(allowed_targets=["127.0.0.1:9000", "[::1]:9001", "Example.com"])
    registry.listeners = (("0.0.0.0", 8123),)
    registry.check("hit", {"url": "http://127.0.0.1:9000/", "requests": 1})
    registry.check("hit", {"url": "http://[::1]:9001/", "requests": 1})
    registry.check("hit", {"url": "http://example.com:81/", "requests": 1})  # a host: any port
    message = _refused(registry, "http://127.0.0.1:9002/").message
    assert "--allow-target 127.0.0.1:9002" in message
    assert "--allow-target [::1]:9000" in _refused(registry, "http://[::1]:9000/").message


def test_on_loopback_the_local_ports_stay_allowed() -> None:
    """A client of a hitd on loopback is on this host: it reaches these ports itself."""
    registry = Registry()
    registry.listeners = (("127.0.0.1", 8123), ("::1", 8123))
    for url in ["http://127.0.0.1:22/", "http://localhost:5432/", "http://[::1]:6379/"]:
        registry.check("hit", {"url": url, "requests": 1})


@pytest.mark.parametrize(
    "url", ["http://0.0.0.0:8123/", "http://[::]:8123/", "http://[::ffff:127.0.0.1]:8123/"]
)
def test_own_listener_is_refused_through_any_local_address(url: str) -> None:
    """0.0.0.0 and :: connect to this host (Linux), as does an IPv4-mapped loopback address:
    the self-target rule missed them (listed with --allow-target, they reached hitd)."""
    registry = Registry(allowed_targets=["0.0.0.0", "::", "::ffff:127.0.0.1"])
    registry.listeners = (("127.0.0.1", 8123),)
    assert "--hit-allow-self" in _refused(registry, url).message


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("Host.example", ("host.example", None)),
        ("10.0.0.5:8080", ("10.0.0.5", 8080)),
        ("[::1]:80", ("::1", 80)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
    ],
)
def test_allow_target_forms(text: str, parsed: tuple[str, int | None]) -> None:
    assert parse_target(text) == parsed


@pytest.mark.parametrize("text", ["h:abc", "h:0", "h:65536", "[::1]x", ":80", ""])
def test_a_malformed_allow_target_exits_2_naming_the_flag(text: str, capsys) -> None:
    with pytest.raises(SpecError) as e:
        parse_config(["--allow-target", text], {})
    assert e.value.field == "--allow-target"
    assert main(["--allow-target", text]) == 2
    assert "--allow-target" in capsys.readouterr().err


@pytest.mark.parametrize("token", ["", " ", " secret", "secret\t", "sec\x00ret", "a\nb"])
def test_a_token_no_client_can_send_exits_2(token: str, capsys) -> None:
    """HTTP strips the spaces around a header value and forbids control characters: such a
    --token could never be matched, every request would be a 401."""
    with pytest.raises(SpecError) as e:  # before main(): the old code would serve
        parse_config(["--token", token], {})
    assert e.value.field == "--token"
    assert main(["--token", token]) == 2
    assert "--token" in capsys.readouterr().err


def test_is_local() -> None:
    assert all(
        map(is_local, ["localhost", "127.0.0.2", "::1", "0.0.0.0", "::", "::ffff:127.1.2.3"])
    )
    assert not any(map(is_local, ["10.0.0.1", "example.com", "::ffff:10.0.0.1", "127.1"]))
