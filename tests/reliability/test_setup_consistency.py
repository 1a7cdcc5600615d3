"""A /setup received by one uvicorn worker takes effect in every worker (within SETUP_REFRESH_S)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.learning.services import Service, service_env, start_backend
from tests.processes import free_port
from tests.trainer.fake_label_studio import label_config

PROJECT = "12"
REFRESH_S = 0.5


@pytest.fixture
def backend(redis_url: str, tiny_detector_path: Path, tmp_path: Path) -> Iterator[tuple[Service, str]]:
    data = tmp_path / "data"
    data.mkdir()
    env = service_env(redis_url, data, tiny_detector_path, "http://127.0.0.1:9", SETUP_REFRESH_S=str(REFRESH_S))
    port = free_port()
    service = start_backend(env, tmp_path / "backend.log", port, workers=2)
    yield service, f"http://127.0.0.1:{port}"
    service.stop()


def _setup(url: str, detection_threshold: float) -> None:
    extra = {"detection_threshold": detection_threshold}
    body = {"project": PROJECT, "schema": label_config(["deer"]), "extra_params": extra}
    with httpx.Client(timeout=30) as fresh:
        fresh.post(f"{url}/setup", json=body).raise_for_status()


def _detections(url: str, photo: bytes) -> int:
    with httpx.Client(timeout=60) as fresh:  # a new connection: either worker may answer
        response = fresh.post(
            f"{url}/v1/detect", params={"project": PROJECT}, files={"images": ("a.jpg", photo, "image/jpeg")}
        )
    response.raise_for_status()
    return len(response.json()["images"][0]["detections"])


def _pids_that_served_detect(log: str, since: int) -> set[int]:
    return {int(pid) for pid in re.findall(r"^(\d+) [\d.]+ uvicorn.access .*POST /v1/detect", log[since:], re.M)}


def test_new_extra_params_reach_every_worker(backend: tuple[Service, str], ena24_dir: Path, ena24_labels) -> None:
    service, url = backend
    photo = (ena24_dir / next(iter(ena24_labels))).read_bytes()
    _setup(url, 0.0)
    # every worker reads (and keeps) the first set-up: all detections kept
    mark = len(service.log())
    with ThreadPoolExecutor(4) as pool:
        before = list(pool.map(lambda _: _detections(url, photo), range(16)))
    assert min(before) > 0, "the tiny detector should find boxes at threshold 0"
    time.sleep(0.5)
    assert len(_pids_that_served_detect(service.log(), mark)) == 2, "both workers must have answered"

    _setup(url, 1.0)  # one worker receives it
    time.sleep(REFRESH_S + 0.2)
    mark = len(service.log())
    with ThreadPoolExecutor(4) as pool:
        after = list(pool.map(lambda _: _detections(url, photo), range(16)))
    time.sleep(0.5)
    assert len(_pids_that_served_detect(service.log(), mark)) == 2, "both workers must have answered"
    assert after == [0] * 16, f"a worker kept the old set-up: detections per answer {after}"
