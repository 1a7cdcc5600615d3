"""Training jobs on real ``rq worker`` processes: faults end as failed jobs that say why, and nothing half-done.

A job killed with its worker stays "started" until its heartbeat expires (up to 90 s with RQ's
defaults); the test fast-forwards that expiry by giving RQ's registry clean-up a later timestamp, which
is exactly what the clean-up does once the time has really passed.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis
from rq.registry import StartedJobRegistry

from backend.contracts import registry
from backend.contracts.bundle import list_bundles
from backend.contracts.keys import TRAINING_QUEUE
from backend.service.jobs import cancel_job, enqueue_training, job_info
from tests.learning.conftest import ENA24_PROJECT
from tests.learning.services import service_env, start_rq_worker
from tests.processes import free_port, wait_until

ENDED = ("finished", "failed", "stopped", "canceled")


def _wait_for_end(connection: redis.Redis, job_id: str, timeout_s: float) -> dict:
    return wait_until(
        lambda: (info := job_info(connection, job_id)) and info["status"] in ENDED and info,
        timeout=timeout_s,
        what=f"job {job_id} to end",
        interval=0.2,
        errors="raise",
    )


def _nothing_published(data_dir) -> bool:
    models = data_dir / "models"
    return list_bundles(models, ENA24_PROJECT) == [] and registry.read_current(models, ENA24_PROJECT) is None


def test_job_fails_with_one_sentence_when_label_studio_is_unreachable(
    redis_url, redis_client, data_dir, tiny_detector_path, settings, tmp_path
):
    closed = f"http://127.0.0.1:{free_port()}"
    env = service_env(redis_url, data_dir, tiny_detector_path, closed)
    worker = start_rq_worker(env, tmp_path / "worker.log", redis_client, kind="rq")
    try:
        job = enqueue_training(redis_client, settings, ENA24_PROJECT, trigger="test")
        info = _wait_for_end(redis_client, job.job_id, 60)
    finally:
        worker.stop()
    assert info["status"] == "failed" and info["stage"] == "exporting"
    error = info["error"]
    assert error.startswith(f"Label Studio at {closed} could not export project {ENA24_PROJECT} (")
    assert error.endswith("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are right") and "\n" not in error
    assert _nothing_published(data_dir)


def test_job_timeout_stops_a_hung_job(rq_worker, ena24_ls, redis_client, settings, data_dir):
    fake, _ = ena24_ls
    fake.export_delay_s = 60.0  # Label Studio hangs on the export
    started = time.monotonic()
    job = enqueue_training(
        redis_client, settings.model_copy(update={"job_timeout_s": 10}), ENA24_PROJECT, trigger="test"
    )
    try:
        info = _wait_for_end(redis_client, job.job_id, 60)
    finally:
        fake.release()
    assert info["status"] == "failed" and info["stage"] == "exporting"
    assert "JobTimeoutException" in info["error"] and "10 seconds" in info["error"]
    assert time.monotonic() - started < 30
    assert _nothing_published(data_dir)


def test_delete_stops_a_running_job_and_publishes_nothing(rq_worker, redis_client, settings, data_dir):
    job_id = enqueue_training(
        redis_client, settings, ENA24_PROJECT, trigger="test", options={"epochs": 500, "patience": 500}
    ).job_id
    info = wait_until(
        lambda: (i := job_info(redis_client, job_id)) and i["progress"].get("epoch") and i,
        timeout=120,
        what="the job to be training",
        interval=0.1,
        errors="raise",
    )
    horse = info["progress"]["pid"]
    cancel_job(redis_client, job_id)
    try:
        info = _wait_for_end(redis_client, job_id, 60)
    finally:
        _kill_if_alive(horse)
    assert info["status"] == "stopped" and info["stage"] == "training" and info["error"]
    assert _nothing_published(data_dir)
    assert enqueue_training(redis_client, settings, ENA24_PROJECT, trigger="again").created


@pytest.mark.parametrize(
    "victims",
    [
        pytest.param("worker", id="worker-process"),
        pytest.param("worker-and-horse", id="worker-and-its-work-horse"),
    ],
)
def test_killed_worker_fails_the_job_and_the_next_trigger_trains_normally(
    victims, rq_worker, worker_env, redis_client, settings, data_dir, tmp_path
):
    long_run = {"epochs": 500, "patience": 500}
    job_id = enqueue_training(redis_client, settings, ENA24_PROJECT, trigger="test", options=long_run).job_id
    info = wait_until(
        lambda: (i := job_info(redis_client, job_id)) and i["progress"].get("epoch") and i,
        timeout=120,
        what="the job to be training",
        interval=0.1,
        errors="raise",
    )
    horse = info["progress"]["pid"]
    if victims == "worker-and-horse":  # both at once: freeze the worker so neither sees the other die
        os.kill(rq_worker.pid, signal.SIGSTOP)
        os.kill(horse, signal.SIGKILL)
    rq_worker.kill()  # SIGKILL the real worker process
    try:
        if victims == "worker-and-horse":
            time.sleep(1)
            assert job_info(redis_client, job_id)["status"] == "started"  # nobody left to say otherwise
            StartedJobRegistry(TRAINING_QUEUE, connection=redis_client).cleanup(timestamp=time.time() + 300)
        info = _wait_for_end(redis_client, job_id, 60)
    finally:
        _kill_if_alive(horse)
    assert info["status"] == "failed" and info["stage"] == "training"
    expected = "died during training" if victims == "worker" else "AbandonedJobError"
    assert expected in info["error"]
    assert _nothing_published(data_dir)

    worker = start_rq_worker(worker_env, tmp_path / "worker-2.log", redis_client)
    try:
        retry = enqueue_training(redis_client, settings, ENA24_PROJECT, trigger="retry")
        assert retry.created and retry.job_id == job_id
        info = _wait_for_end(redis_client, job_id, 180)
    finally:
        worker.stop()
    assert info["status"] == "finished" and info["result"]["status"] == "promoted", info
    assert registry.read_current(data_dir / "models", ENA24_PROJECT) == info["result"]["version"]


def _kill_if_alive(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
