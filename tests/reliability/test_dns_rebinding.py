"""DNS rebinding: an image download connects to the address the URL policy checked, not to a second answer.

No hostile DNS server can run here (and nothing may reach the internet), so ``socket.getaddrinfo`` is
patched in-process to stand in for one: it answers a public address for the policy's check and a
loopback address afterwards, exactly what a rebinding attack's DNS server does with a zero TTL. IP
literals go to the real resolver (libc parses them; no DNS server ever sees them). The image host is
a real HTTP server on 127.0.0.1 that records every request reaching it; the client, its transport and
the sockets are the real ones.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.config import Settings
from backend.errors import ImageAccessError
from backend.labelstudio.client import LabelStudioClient
from tests.backend.fake_ls import serve_in_thread
from tests.processes import free_port

HOST = "images.example.org"
#: A public address (example.com's): what the hostile resolver answers first.
PUBLIC = "93.184.215.14"
PHOTO = b"\xff\xd8\xff\xe0 not really a jpeg, but bytes the server sent"

_real_getaddrinfo = socket.getaddrinfo


def _is_ip_literal(host: object) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, str(host).split("%", 1)[0])
    except OSError:
        return False
    return True


class HostileResolver:
    """Stands in for a DNS server: the n-th lookup of ``HOST`` gets ``answers[min(n, len - 1)]``."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = answers
        self.lookups = 0

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list:
        if host != HOST or _is_ip_literal(host):
            return _real_getaddrinfo(host, port, *args, **kwargs)
        addresses = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, int(port or 0))) for a in addresses]


class ImageHost:
    """A real HTTP image server on loopback that records the ``Host`` header of every request it gets."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    def app(self) -> Starlette:
        async def image(request: Request) -> Response:
            self.hosts.append(request.headers.get("host", ""))
            return Response(PHOTO, media_type="image/jpeg")

        return Starlette(routes=[Route("/{path:path}", image)])


@pytest.fixture
def image_host() -> Iterator[tuple[ImageHost, int]]:
    host = ImageHost()
    port = free_port()
    with serve_in_thread(host.app(), port=port):
        yield host, port


def _client(tmp_path: Path, **overrides: Any) -> LabelStudioClient:
    settings = Settings(data_dir=tmp_path, allowed_image_hosts=HOST, image_timeout_s=5, **overrides)
    return LabelStudioClient(settings, use_cache=False)


@pytest.mark.parametrize(
    "second_answer",
    [pytest.param(["127.0.0.1"], id="loopback"), pytest.param(["127.0.0.1", PUBLIC], id="loopback-among-public")],
)
def test_a_rebound_name_does_not_reach_the_loopback_server(
    tmp_path: Path,
    image_host: tuple[ImageHost, int],
    monkeypatch: pytest.MonkeyPatch,
    second_answer: list[str],
) -> None:
    server, port = image_host
    resolver = HostileResolver([PUBLIC], second_answer)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with _client(tmp_path) as client, pytest.raises(ImageAccessError, match="private or loopback") as refused:
        client.fetch_image(f"http://{HOST}:{port}/cam1.jpg")
    assert "127.0.0.1" in str(refused.value)
    assert resolver.lookups == 2, "the policy's check and the connect each resolve once"
    assert server.hosts == [], "the download reached the loopback server through the rebound name"


def test_an_allowed_host_is_fetched_from_the_checked_address_with_its_own_host_header(
    tmp_path: Path, image_host: tuple[ImageHost, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The normal path: with ALLOW_PRIVATE_IMAGE_URLS the name mapped to 127.0.0.1 is fetched there."""
    server, port = image_host
    resolver = HostileResolver(["127.0.0.1"])
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with _client(tmp_path, allow_private_image_urls=True) as client:
        assert client.fetch_image(f"http://{HOST}:{port}/cam1.jpg") == PHOTO
        assert client.fetch_image(f"http://{HOST}:{port}/cam2.jpg") == PHOTO
    assert server.hosts == [f"{HOST}:{port}"] * 2, "the Host header must stay the URL's hostname"
    assert resolver.lookups >= 1


def test_without_allow_private_a_name_answering_loopback_is_refused_before_any_request(
    tmp_path: Path, image_host: tuple[ImageHost, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, port = image_host
    monkeypatch.setattr(socket, "getaddrinfo", HostileResolver(["127.0.0.1"]))
    with _client(tmp_path) as client, pytest.raises(ImageAccessError, match="private or loopback"):
        client.fetch_image(f"http://{HOST}:{port}/cam1.jpg")
    assert server.hosts == []


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "key.pem", directory / "cert.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={HOST}"]
    try:
        subprocess.run([*command, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl cannot make a test certificate here: {exc}")
    return key, cert


def test_tls_keeps_the_hostname_as_sni_and_verifies_the_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connecting to the checked IP must not turn TLS into "connect to an IP": SNI and the cert check stay on HOST."""
    key, cert = _self_signed(tmp_path)
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def record(_sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _context: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = record
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept_one() -> None:
        connection, _ = listener.accept()
        try:
            context.wrap_socket(connection, server_side=True).close()
        except (ssl.SSLError, OSError):
            pass  # the client refuses the self-signed certificate: the handshake ends here
        finally:
            connection.close()

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()
    monkeypatch.setattr(socket, "getaddrinfo", HostileResolver(["127.0.0.1"]))
    try:
        with _client(tmp_path, allow_private_image_urls=True) as client, pytest.raises(ImageAccessError) as failed:
            client.fetch_image(f"https://{HOST}:{port}/cam1.jpg")
    finally:
        thread.join(10)
        listener.close()
    assert names == [HOST], "the TLS handshake must name the URL's host (SNI), not the address"
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value), "an untrusted certificate must be refused"
