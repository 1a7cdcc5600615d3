"""The whole loop on real processes: annotate -> trigger -> job -> bundle -> gate -> every backend worker swaps.

uvicorn runs the real app with 2 worker processes and the tiny generated MegaDetector; a real worker
process trains on the shared ENA24 photos served by a fake Label Studio (boxes over the central 80 %,
invented locations, two photos labelled at image level only). Each backend process logs its pid, so the
test can tell that every process that served the old version now serves the new one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from backend.contracts import registry
from backend.service.jobs import enqueue_training
from tests.backend.bundles import write_bundle
from tests.backend.fake_ls import serve_in_thread
from tests.learning.conftest import ENA24_PROJECT
from tests.learning.services import Service, start_backend, swap_times
from tests.processes import free_port, wait_until
from tests.trainer.fake_label_studio import FakeProject, ena24_project, label_config

pytestmark = pytest.mark.slow

LS_PROJECT = f"{ENA24_PROJECT}.1714557000"
DETECTOR_ID = "md_tiny_md_v5"
#: Seconds a promotion may take to reach every backend process (the target is 2 s).
SWAP_DEADLINE_S = 10.0


@pytest.fixture
def ena24_ls(ena24_dir: Path, ena24_labels: dict[str, str]) -> Iterator[tuple[FakeProject, str]]:
    fake = ena24_project(ena24_dir, ena24_labels, project=int(ENA24_PROJECT), image_level=2)
    with serve_in_thread(fake.app()) as url:
        yield fake, url


@pytest.fixture
def backend(worker_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[Service, str]]:
    port = free_port()
    service = start_backend(worker_env, tmp_path / "backend.log", port, workers=2)
    yield service, f"http://127.0.0.1:{port}"
    service.stop()


def _setup_version(url: str, schema: str) -> str:
    body = {
        "project": LS_PROJECT,
        "schema": schema,
        "hostname": "http://localhost:8080",
        "access_token": None,
        "extra_params": None,
    }
    with httpx.Client(timeout=10) as fresh:  # a new connection: any worker process may answer
        response = fresh.post(f"{url}/setup", json=body)
    response.raise_for_status()
    return response.json()["model_version"]


def _predict(url: str, fake: FakeProject, schema: str, tasks: int = 2) -> list[str]:
    body = {
        "tasks": [{**t, "annotations": []} for t in fake.tasks[:tasks]],
        "project": LS_PROJECT,
        "label_config": schema,
        "params": {"login": None, "password": None, "context": None},
    }
    response = httpx.post(f"{url}/predict", json=body, timeout=120)
    response.raise_for_status()
    return [r["model_version"] for r in response.json()["results"]]


def _every_answer(url: str, schema: str, n: int = 30) -> set[str]:
    with ThreadPoolExecutor(6) as pool:
        return set(pool.map(lambda _: _setup_version(url, schema), range(n)))


def _wait_for_version(url: str, schema: str, version: str) -> float:
    """Seconds until /setup answers ``version`` on every one of a burst of fresh connections."""
    start = time.monotonic()
    wait_until(
        lambda: _every_answer(url, schema, 12) == {version},
        timeout=SWAP_DEADLINE_S,
        what=f"every worker to serve {version}",
        interval=0.05,
        errors="raise",
    )
    return time.monotonic() - start


def _swaps(log: str, version: str) -> set[int]:
    """Pids of the backend processes that logged serving ``version`` for the project."""
    return set(swap_times(log, ENA24_PROJECT, version))


def _rollback_swaps(log: str, version: str) -> set[int]:
    """Pids that logged serving ``version`` twice (promoted, replaced, then rolled back to)."""
    line = re.compile(
        rf"^(\d+) [\d.]+ backend\.service\.slots INFO project {ENA24_PROJECT} now serves {re.escape(version)}$", re.M
    )
    pids = line.findall(log)
    return {int(pid) for pid in pids if pids.count(pid) >= 2}


def _train(backend_url: str, redis_client, settings, options=None) -> dict:
    if options is None:
        answer = httpx.post(f"{backend_url}/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).json()
        assert answer["status"] == "queued", answer
        job_id = answer["job"]
    else:
        job_id = enqueue_training(redis_client, settings, ENA24_PROJECT, trigger="test", options=options).job_id
    stages: list[str] = []

    def ended():
        info = httpx.get(f"{backend_url}/jobs/{job_id}").json()
        if info["stage"] not in stages:
            stages.append(info["stage"])
        return info["status"] in ("finished", "failed") and info

    info = wait_until(ended, timeout=240, what="the training job", interval=0.1, errors="raise")
    assert info["status"] == "finished", info
    info["stages_seen"] = stages
    return info


def test_trained_model_reaches_every_backend_worker_and_rollback_restores_the_old_one(
    ena24_ls, backend, rq_worker, redis_client, settings, data_dir
):
    fake, _ = ena24_ls
    service, url = backend
    schema = label_config(fake.species)
    before = f"{DETECTOR_ID}+none"
    assert _setup_version(url, schema) == before
    with ThreadPoolExecutor(4) as pool:  # concurrent predictions: both worker processes load the project
        assert set(sum(pool.map(lambda _: _predict(url, fake, schema), range(8)), [])) == {before}
    wait_until(
        lambda: _every_answer(url, schema, 12) == {before} and len(_swaps(service.log(), before)) == 2,
        timeout=60,
        what="both backend processes to serve the project",
        interval=0.1,
        errors="raise",
    )

    first = _train(url, redis_client, settings)
    assert first["result"]["status"] == "promoted" and first["stage"] == "done"
    assert {"queued", "done"} <= set(first["stages_seen"])
    counts = first["progress"]["counts"]
    assert set(counts) == {"train", "val", "test"}, "the last counts reported are the split's"
    v1 = f"{DETECTOR_ID}+{first['result']['version']}"
    seconds_v1 = _wait_for_version(url, schema, v1)
    assert set(_predict(url, fake, schema)) == {v1}
    assert _swaps(service.log(), v1) == _swaps(service.log(), before), "every backend process swapped"

    forced = _train(url, redis_client, settings, options={"promotion_min_gain": -1.0})
    assert forced["result"]["status"] == "promoted" and forced["result"]["served_version"] == first["result"]["version"]
    v2 = f"{DETECTOR_ID}+{forced['result']['version']}"
    _wait_for_version(url, schema, v2)

    promoted_at = time.monotonic()
    answer = httpx.post(f"{url}/models/{first['result']['version']}/promote", params={"project": ENA24_PROJECT})
    assert answer.json()["previous"] == forced["result"]["version"]
    _wait_for_version(url, schema, v1)
    seconds_rollback = time.monotonic() - promoted_at
    assert set(_predict(url, fake, schema)) == {v1}
    assert _swaps(service.log(), v2) == _swaps(service.log(), before)
    assert _rollback_swaps(service.log(), v1) == _swaps(service.log(), before)
    assert seconds_v1 < SWAP_DEADLINE_S and seconds_rollback < SWAP_DEADLINE_S


def _bundle(models_dir: Path, version: str) -> None:
    write_bundle(models_dir, ENA24_PROJECT, version, labels=["Chicken", "Grey Fox"], serve=True, reason="test")


def test_restarted_backend_serves_the_current_pointer_not_the_newest_bundle(worker_env, data_dir, tmp_path):
    """A backend started on an existing registry (after a rollback) serves the pointer's bundle."""
    models = data_dir / "models"
    for version in ("p1-a-oldest", "p1-b-middle", "p1-c-newest"):
        _bundle(models, version)
    registry.write_current(models, ENA24_PROJECT, "p1-b-middle")
    port = free_port()
    service = start_backend(worker_env, tmp_path / "backend.log", port, workers=2)
    try:
        answers = _every_answer(f"http://127.0.0.1:{port}", label_config(["Chicken", "Grey Fox"]), 12)
    finally:
        service.stop()
    assert answers == {f"{DETECTOR_ID}+p1-b-middle"}
