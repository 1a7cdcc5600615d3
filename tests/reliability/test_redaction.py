"""Tokens, PATs, basic-auth passwords and presigned URL signatures never reach logs or error bodies."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import httpx
import pytest
from uvicorn.logging import AccessFormatter

from backend import redaction
from backend.config import Settings
from backend.vision.detector import Detector
from tests.backend.conftest import running_app
from tests.backend.fake_ls import LEGACY_TOKEN

SIGNATURE = "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3"
CREDENTIAL = "AKIAEXAMPLEKEY1234%2F20260101%2Fus-east-1"
QUERY = f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={CREDENTIAL}&X-Amz-Signature={SIGNATURE}"
PRESIGNED = f"https://bucket.s3.amazonaws.com/photos/cam1.jpg?{QUERY}"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJlLXBhcnQtb2YtdGhlLXBhdA"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"GET {PRESIGNED} failed", SIGNATURE),
        (f"GET {PRESIGNED} failed", CREDENTIAL),
        ("https://acct.blob.core.windows.net/c/a.jpg?sv=2022&sig=YWJjZGVmZ2hp%3D%3D", "YWJjZGVmZ2hp"),
        ("https://storage.googleapis.com/b/a.jpg?X-Goog-Signature=0a1b2c3d4e5f6a7b", "0a1b2c3d4e5f6a7b"),
        ("Authorization: Token 0123456789abcdef0123", "0123456789abcdef0123"),
        ("Authorization: Bearer abc.d3f-ghi_jkl", "abc.d3f-ghi_jkl"),
        ("Authorization: Basic bGFiZWxzdHVkaW86cGFzcw==", "bGFiZWxzdHVkaW86cGFzcw=="),
        (f"refresh with {JWT}", JWT),
        ("proxy http://admin:hunter2secret@10.0.0.1:3128", "hunter2secret"),
        ("/webhook?secret=webhook-secret-value&x=1", "webhook-secret-value"),
    ],
)
def test_redact_masks_each_kind_of_credential(text: str, secret: str) -> None:
    masked = redaction.redact(text)
    assert secret not in masked and redaction.MASK in masked


def test_redact_keeps_ordinary_text_and_masks_registered_secrets() -> None:
    text = "basic authentication required; project 7: 12 tasks predicted with md_v5a+p7-a3 in 1.2 s (http://ls:8080/api/projects/7)"
    assert redaction.redact(text) == text
    redaction.register("a-very-private-value", "short")
    assert redaction.redact("key=a-very-private-value short") == "key=*** short"


def test_no_credential_reaches_the_log_or_an_error_body(
    settings_factory: Callable[..., Settings], detector: Detector, label_config: str, caplog: pytest.LogCaptureFixture
) -> None:
    password, webhook_secret, setup_token = "basic-pass-s3cr3t", "webhook-s3cr3t-value", "setup-access-token-42"
    settings = settings_factory(
        basic_auth_user="labelstudio",
        basic_auth_pass=password,
        webhook_secret=webhook_secret,
    )
    # a presigned URL on an allowed host that answers 404: the failure is logged and reported
    signed = f"{settings.label_studio_url}/data/upload/3/missing.jpg?{QUERY}"
    bodies: list[str] = []
    caplog.set_level(logging.DEBUG)
    with running_app(settings, detector) as url, httpx.Client(base_url=url, timeout=60) as http:
        auth = ("labelstudio", password)
        setup = {"project": "3", "schema": label_config, "access_token": setup_token, "hostname": None}
        bodies.append(http.post("/setup", json=setup, auth=auth).text)
        bodies.append(http.post("/setup", json=setup, auth=("labelstudio", password + "x")).text)
        task = {"id": 1, "data": {"image": signed}, "annotations": []}
        predict = {"tasks": [task], "project": "3", "label_config": label_config}
        bodies.append(http.post("/predict", json=predict, auth=auth).text)
        detect = http.post("/v1/detect", json={"urls": [signed, PRESIGNED]}, auth=auth).json()
        # "file" echoes the caller's own URL as its identifier (it is how the caller matches results)
        assert [image.pop("file") for image in detect["images"]] == [signed, PRESIGNED]
        bodies.append(json.dumps(detect))
        bodies.append(http.post(f"/webhook?secret={webhook_secret}x", json={"action": "PROJECT_UPDATED"}).text)
        bodies.append(http.get(f"/jobs/train-3?token={JWT}", auth=auth).text)
    assert "answered 404" in "\n".join(bodies), "the flows never reached the presigned URL's failure"
    for secret in (SIGNATURE, CREDENTIAL, password, webhook_secret, setup_token, LEGACY_TOKEN, JWT):
        assert secret not in caplog.text, f"{secret!r} in the log"
        for body in bodies:
            assert secret not in body, f"{secret!r} in an error body: {body}"


@pytest.mark.parametrize("hostile", ["a." * 50_000, "://" + "a:" * 50_000, "basic " * 20_000, "eyJa." * 20_000])
def test_redact_takes_linear_time_on_hostile_text(hostile: str) -> None:
    # logged input comes from clients: a quadratic pattern would stall every request that logs it
    started = time.perf_counter()
    redaction.redact(hostile)
    assert time.perf_counter() - started < 0.5


def test_uvicorn_access_lines_keep_their_arguments_and_lose_their_credentials() -> None:
    # uvicorn's access formatter unpacks the record's five arguments: flattening them into the message
    # made every access line of `camtrap serve` a logging traceback instead (found by bench/load.py)
    redaction.install()
    formatter = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False)
    access = logging.getLogger("uvicorn.access")
    args = ("127.0.0.1:5000", "GET", f"/jobs/train-3?token={JWT}", "1.1", 200)
    record = access.makeRecord(access.name, logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None)
    assert formatter.format(record) == '127.0.0.1:5000 - "GET /jobs/train-3?token=*** HTTP/1.1" 200 OK'
    # a registered secret split over two arguments is only visible in the whole message: flattened
    redaction.register("split-secret-value")
    record = access.makeRecord(access.name, logging.INFO, __file__, 1, "%s%s", ("split-sec", "ret-value"), None)
    assert (record.getMessage(), record.args) == ("***", None)
