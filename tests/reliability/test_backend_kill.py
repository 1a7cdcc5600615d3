"""A backend process SIGKILLed while it serves ``/predict`` (issue 12).

uvicorn 0.55 with 2 worker processes (``start_backend``: pid on every log line), a promoted classifier
bundle, the fake ENA24 project over HTTP with a slow image server (``delay_s``) so one ``/predict`` of
several photos lasts seconds. The process serving it is the one holding a connection to the fake Label
Studio (psutil); it is killed mid-request. uvicorn's supervisor notices the dead child within its
0.5 s loop and starts a new one (``keep_subprocess_alive``), which reads the same pointer file.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from tests.backend.bundles import write_bundle
from tests.learning.conftest import ENA24_PROJECT
from tests.learning.services import Service, start_backend
from tests.processes import free_port, wait_until
from tests.trainer.fake_label_studio import FakeProject, label_config

LS_PROJECT = f"{ENA24_PROJECT}.1714557000"
VERSION = "md_tiny_md_v5+v2"
#: Seconds each photo download takes during the slow request (2 downloads at a time, 8 photos).
SLOW_IMAGE_S = 2.0
#: A killed request must end this soon after the kill (an error, not a hang).
ERROR_WITHIN_S = 3.0


@pytest.fixture
def backend(ena24_ls, worker_env: dict[str, str], data_dir: Path, tmp_path: Path) -> Iterator[tuple[Service, str]]:
    fake, _ = ena24_ls
    species = sorted(fake.species)
    write_bundle(data_dir / "models", ENA24_PROJECT, "v2", favourite=species[0], labels=species, serve=True)
    port = free_port()
    service = start_backend(worker_env, tmp_path / "backend.log", port, workers=2)
    yield service, f"http://127.0.0.1:{port}"
    service.stop()


def _predict_body(fake: FakeProject, tasks: int) -> dict[str, Any]:
    return {
        "tasks": [{**t, "annotations": []} for t in fake.tasks[:tasks]],
        "project": LS_PROJECT,
        "label_config": label_config(fake.species),
    }


def _predict_versions(url: str, fake: FakeProject, tasks: int = 1) -> set[str]:
    with httpx.Client(timeout=60) as fresh:  # a new connection: either process may answer
        response = fresh.post(f"{url}/predict", json=_predict_body(fake, tasks))
    response.raise_for_status()
    return {r["model_version"] for r in response.json()["results"]}


def _setup_version(url: str, fake: FakeProject) -> str:
    body = {"project": LS_PROJECT, "schema": label_config(fake.species), "hostname": "http://localhost:8080"}
    with httpx.Client(timeout=30) as fresh:
        response = fresh.post(f"{url}/setup", json=body)
    response.raise_for_status()
    return str(response.json()["model_version"])


def _served_by(log: str, route: str) -> set[int]:
    return {int(p) for p in re.findall(rf'^(\d+) [\d.]+ uvicorn.access .*"POST {route} HTTP/1.1" 200', log, re.M)}


def _workers(service: Service) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker, its third child)."""
    workers = set()
    for child in psutil.Process(service.pid).children():
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                workers.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return workers


def _links_to(service: Service, ls_port: int) -> set[tuple[int, int]]:
    """(backend pid, local port) of every connection a backend process holds to the fake Label Studio."""
    links = set()
    for pid in _workers(service):
        try:
            connections = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        links |= {(pid, c.laddr.port) for c in connections if c.raddr and c.raddr.port == ls_port}
    return links


def _downloading(service: Service, ls_port: int, idle: set[tuple[int, int]]) -> int | None:
    """The backend process that opened a connection to the fake Label Studio since ``idle`` was read."""
    return next((pid for pid, _ in _links_to(service, ls_port) - idle), None)


def test_killed_predict_errors_the_other_process_serves_and_the_respawn_serves_the_same_version(
    backend: tuple[Service, str], ena24_ls
) -> None:
    service, url = backend
    fake, ls_url = ena24_ls
    ls_port = urlsplit(ls_url).port
    assert ls_port
    before = _setup_version(url, fake)
    assert before == VERSION and _predict_versions(url, fake) == {VERSION}
    workers = _workers(service)
    assert len(workers) == 2

    fake.delay_s = SLOW_IMAGE_S
    outcome: dict[str, Any] = {}

    def slow_predict() -> None:
        try:
            outcome["response"] = httpx.post(f"{url}/predict", json=_predict_body(fake, 8), timeout=120)
        except httpx.HTTPError as exc:
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    idle = _links_to(service, ls_port)  # keep-alive connections of the warm-up
    client = threading.Thread(target=slow_predict)
    client.start()
    victim = wait_until(lambda: _downloading(service, ls_port, idle), timeout=30, what="/predict to download photos")
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    client.join(30)
    fake.delay_s = 0.0
    assert not client.is_alive(), "the client hangs on a killed request"
    assert "error" in outcome, f"the killed request got an answer: {outcome.get('response')}"
    assert isinstance(outcome["error"], httpx.TransportError), repr(outcome["error"])
    assert outcome["ended"] - killed < ERROR_WITHIN_S

    # The survivor serves at once, while the supervisor starts a new process.
    survivor = next(iter(workers - {victim}))
    mark = len(service.log())
    assert [_predict_versions(url, fake) for _ in range(4)] == [{VERSION}] * 4
    assert _setup_version(url, fake) == before
    time.sleep(0.3)
    assert _served_by(service.log()[mark:], "/predict") <= {survivor} | (_workers(service) - workers)

    def respawned() -> set[int]:
        now = _workers(service)
        return now - workers if len(now) == 2 and victim not in now else set()

    [new] = wait_until(respawned, timeout=60, what="uvicorn to start a new worker process")
    assert f"Child process [{victim}] died" in service.log()
    wait_until(
        lambda: service.log().count("Application startup complete") >= 3, timeout=120, what="the new process to start"
    )

    # Until the new process has answered both /setup and /predict: every answer is the version served before.
    mark = len(service.log())
    setups: set[str] = set()
    predicts: set[str] = set()

    def new_process_answered() -> bool:
        setups.add(_setup_version(url, fake))
        predicts.update(_predict_versions(url, fake))
        log = service.log()[mark:]
        return new in _served_by(log, "/setup") and new in _served_by(log, "/predict")

    wait_until(new_process_answered, timeout=60, what="the new process to answer", interval=0.05)
    assert setups == {before} and predicts == {VERSION}
