"""HTTPS: certificates are verified (with SNI), -k turns verification off."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from hitpool.hit import CannotStart, Spec, run_async

from .servers import Server

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key)),
            *("-out", str(crt), "-days", "1", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return key, crt


@pytest.fixture
async def tls_server(cert: tuple[Path, Path]) -> Server:
    key, crt = cert
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    names: list[str | None] = []
    ctx.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,misc,return-value]
    s = await Server().start("127.0.0.1", ssl=ctx)
    s.sni = names  # type: ignore[attr-defined]
    yield s  # type: ignore[misc]
    await s.stop()


async def test_self_signed_certificate_is_refused(tls_server: Server) -> None:
    with pytest.raises(CannotStart, match="tls"):
        await run_async(Spec(tls_server.url("/ok"), requests=3, concurrency=2))
    assert tls_server.total == 0


async def test_insecure_skips_verification(tls_server: Server) -> None:
    s = await run_async(Spec(tls_server.url("/ok"), requests=9, concurrency=3, insecure=True))
    assert s.successes == 9 == tls_server.seen["/ok"]


async def test_trusted_certificate_verifies_with_sni(
    tls_server: Server, cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = socket.getaddrinfo("localhost", tls_server.port, type=socket.SOCK_STREAM)[0][4][0]
    if first != "127.0.0.1":
        pytest.skip("localhost does not resolve to 127.0.0.1 first here")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[1]))  # trust our CA for this test
    url = f"https://localhost:{tls_server.port}/ok"
    s = await run_async(Spec(url, requests=4, concurrency=2))
    assert s.successes == 4
    assert set(tls_server.sni) == {"localhost"}  # type: ignore[attr-defined]
    # the same certificate for an IP it does not name fails the host name check
    with pytest.raises(CannotStart, match="tls"):
        await run_async(Spec(tls_server.url("/ok"), requests=2, concurrency=1))
