"""MAX_REQUEST_BYTES: an oversized body is refused with 413 before the service reads it whole."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx

from backend.config import Settings
from backend.vision.detector import Detector
from tests.backend.conftest import running_app

LIMIT = 64 * 1024


def _chunks(total: int, size: int = 8192) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


#: The start of a multipart body with one file part (its bytes follow).
MULTIPART_HEAD = (
    b'--x\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
)


def test_declared_length_over_the_limit_is_answered_without_reading_the_body(
    settings_factory: Callable[..., Settings], detector: Detector
) -> None:
    with running_app(settings_factory(max_request_bytes=LIMIT), detector) as url:
        address = urlsplit(url)
        with socket.create_connection((address.hostname, address.port), timeout=5) as raw:
            # 1 GB announced, not one byte of it sent: the answer must come anyway
            raw.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000000000\r\n\r\n"
            )
            started = time.monotonic()
            answer = raw.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 413"), answer
        assert time.monotonic() - started < 2
        assert "MAX_REQUEST_BYTES" in answer


def test_chunked_body_over_the_limit_is_cut_off_with_413(
    settings_factory: Callable[..., Settings], detector: Detector
) -> None:
    with running_app(settings_factory(max_request_bytes=LIMIT), detector) as url, httpx.Client(timeout=30) as http:
        for path, content_type, head in (
            ("/predict", "application/json", b""),
            # a well-formed part that never ends: the parser streams it, so only the limit can stop it
            ("/v1/detect", "multipart/form-data; boundary=x", MULTIPART_HEAD),
        ):
            body = itertools.chain([head], _chunks(10 * LIMIT))
            response = http.post(url + path, content=body, headers={"Content-Type": content_type})
            assert response.status_code == 413, (path, response.text)
            assert response.json() == {"detail": f"request body larger than MAX_REQUEST_BYTES ({LIMIT} bytes)"}


def test_bodies_under_the_limit_are_served(
    settings_factory: Callable[..., Settings], detector: Detector, label_config: str
) -> None:
    with running_app(settings_factory(max_request_bytes=LIMIT), detector) as url:
        body = {"tasks": [], "label_config": label_config, "padding": "x" * (LIMIT // 2)}
        response = httpx.post(f"{url}/predict", json=body, timeout=30)
        assert response.status_code == 200, response.text
        chunked = httpx.post(
            f"{url}/predict",
            content=iter([httpx.Request("POST", "/", json=body).content]),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert chunked.status_code == 200, chunked.text
