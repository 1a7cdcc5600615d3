"""Redis SIGKILLed and restarted (same port, same append-only file) during a training job and during
pre-annotation (issue 12).

Everything is a real process: ``redis-server --appendonly yes`` started by the test, ``camtrap worker``
(``python -m trainer worker``), ``camtrap serve`` with 2 worker processes (``python -m backend.cli
serve --workers 2``), the fake ENA24 project over HTTP. Redis is down for :data:`OUTAGE_S` seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from rq.job import Job

from backend.contracts import registry
from backend.contracts.label_jobs import PRELABEL_FUNCTION
from tests.learning.conftest import ENA24_PROJECT
from tests.learning.services import Service, service_env, start_backend, start_rq_worker
from tests.processes import RedisServer, free_port, wait_until
from tests.trainer.fake_label_studio import FakeProject, label_config

LS_PROJECT = f"{ENA24_PROJECT}.1714557000"
DETECTOR_ID = "md_tiny_md_v5"
#: How long Redis stays down, in seconds.
OUTAGE_S = 4.0
#: Label Studio's limits: /health and /webhook answer within 1 s.
LS_LIMIT_S = 1.0
ENDED = ("finished", "failed", "stopped", "canceled")


@dataclass
class Stack:
    server: RedisServer
    worker: Service
    backend: Service
    url: str
    fake: FakeProject
    env: dict[str, str]
    tmp: Path

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url, socket_timeout=2)


@pytest.fixture
def stack(ena24_ls, data_dir: Path, tiny_detector_path: Path, tmp_path: Path) -> Iterator[Stack]:
    fake, ls_url = ena24_ls
    server = RedisServer(tmp_path / "redis", appendonly=True)
    (tmp_path / "redis").mkdir()
    server.start()
    # A run long enough (about 0.1 s an epoch here) that Redis is back before it ends: 25 epochs ended in the
    # outage, and RQ could not record the outcome (see trainer.jobs._outlast_redis_outage).
    env = service_env(
        server.url,
        data_dir,
        tiny_detector_path,
        ls_url,
        TRAIN_EPOCHS="150",
        TRAIN_PATIENCE="1000",
        PRELABEL_CHUNK_SIZE="3",
    )
    started: list[Service] = []
    try:
        started.append(start_rq_worker(env, tmp_path / "worker.log", redis.Redis.from_url(server.url)))
        port = free_port()
        started.append(start_backend(env, tmp_path / "backend.log", port, workers=2, command="camtrap"))
        yield Stack(server, started[0], started[1], f"http://127.0.0.1:{port}", fake, env, tmp_path)
    finally:
        for service in reversed(started):
            service.stop()
        server.stop()


def _post(url: str, path: str, body: dict[str, Any]) -> tuple[httpx.Response, float]:
    begin = time.perf_counter()
    with httpx.Client(timeout=60) as fresh:  # a new connection: either backend process may answer
        response = fresh.post(f"{url}{path}", json=body)
    return response, time.perf_counter() - begin


def _get(url: str, path: str) -> tuple[httpx.Response, float]:
    begin = time.perf_counter()
    with httpx.Client(timeout=60) as fresh:
        response = fresh.get(f"{url}{path}")
    return response, time.perf_counter() - begin


def _job(url: str, job_id: str) -> dict[str, Any] | None:
    response, _ = _get(url, f"/jobs/{job_id}")
    return response.json() if response.status_code == 200 else None


def _all_ended(url: str, job_ids: list[str], timeout: float) -> list[dict[str, Any]]:
    def ended() -> list[dict[str, Any]] | None:
        infos = [i for j in job_ids if (i := _job(url, j)) and i["status"] in ENDED]
        return infos if len(infos) == len(job_ids) else None

    return wait_until(ended, timeout=timeout, what="the jobs to end", interval=0.5) if job_ids else []


def _predict(stack: Stack, tasks: int = 1) -> httpx.Response:
    body = {
        "tasks": [{**t, "annotations": []} for t in stack.fake.tasks[:tasks]],
        "project": LS_PROJECT,
        "label_config": label_config(stack.fake.species),
    }
    return _post(stack.url, "/predict", body)[0]


def _setup_version(stack: Stack) -> str:
    body = {"project": LS_PROJECT, "schema": label_config(stack.fake.species), "hostname": "http://localhost:8080"}
    response, _ = _post(stack.url, "/setup", body)
    response.raise_for_status()
    return str(response.json()["model_version"])


def _start_training(stack: Stack) -> dict[str, Any]:
    response, _ = _post(stack.url, "/webhook", {"action": "START_TRAINING", "project": {"id": int(ENA24_PROJECT)}})
    response.raise_for_status()
    return response.json()


def _annotation_created(stack: Stack) -> tuple[httpx.Response, float]:
    body = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": int(ENA24_PROJECT)},
        "task": {"id": 1},
        "annotation": {"id": 99, "result": []},
    }
    return _post(stack.url, "/webhook", body)


def _outage_answers(stack: Stack) -> dict[str, Any]:
    """What the service answers while Redis is down: /health, /predict, a webhook."""
    health, health_s = _get(stack.url, "/health")
    predict = _predict(stack)
    hook, hook_s = _annotation_created(stack)
    return {"health": health, "health_s": health_s, "predict": predict, "hook": hook, "hook_s": hook_s}


def _assert_served_through_the_outage(answers: dict[str, Any], version: str) -> None:
    health = answers["health"]
    assert answers["health_s"] < LS_LIMIT_S, answers["health_s"]
    assert health.status_code == 200 or "redis" in health.text.lower(), (health.status_code, health.text)
    predict = answers["predict"]
    assert predict.status_code == 200, predict.text
    [result] = predict.json()["results"]
    assert result["model_version"] == version and result["result"], result
    hook = answers["hook"]
    assert answers["hook_s"] < LS_LIMIT_S and hook.status_code == 200, (answers["hook_s"], hook.text)
    assert hook.json()["status"] == "redis_unavailable", hook.json()
    assert hook.json()["detail"].startswith("event not recorded: Redis is unavailable"), hook.json()


def test_redis_killed_during_training(stack: Stack) -> None:
    before = _setup_version(stack)
    assert before == f"{DETECTOR_ID}+none"
    job_id = _start_training(stack)["job"]
    wait_until(
        lambda: (info := _job(stack.url, job_id)) and info["progress"].get("epoch"),
        timeout=120,
        what="the job to be training",
        interval=0.1,
    )
    stack.server.kill()
    killed = time.monotonic()
    answers = _outage_answers(stack)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - killed)))
    stack.server.start()
    _assert_served_through_the_outage(answers, before)

    [info] = _all_ended(stack.url, [job_id], timeout=120)
    assert stack.worker.alive(), "camtrap worker outlives the outage"
    assert "heartbeat skipped" in stack.worker.log() or "progress not saved" in stack.worker.log()
    assert info["status"] == "finished" and info["result"]["status"] == "promoted", info
    assert info["progress"]["stage"] == "done", "progress was saved again after the outage"
    version = info["result"]["version"]
    assert registry.read_current(Path(stack.env["DATA_DIR"]) / "models", ENA24_PROJECT) == version
    promoted = f"{DETECTOR_ID}+{version}"
    wait_until(lambda: all(_setup_version(stack) == promoted for _ in range(6)), timeout=30, what="every process swaps")
    assert _predict(stack).json()["results"][0]["model_version"] == promoted
    hook, _ = _annotation_created(stack)
    assert hook.json()["status"] == "counted", hook.json()


def _prelabel_jobs(client: redis.Redis) -> list[str]:
    """Every pre-annotation chunk job Redis holds (queued, running or ended), by id."""
    ids = [key.decode().split(":")[2] for key in client.keys("rq:job:*") if key.count(b":") == 2]
    return [job.id for job in Job.fetch_many(ids, connection=client) if job and job.func_name == PRELABEL_FUNCTION]


def test_redis_killed_during_pre_annotation(stack: Stack) -> None:
    fake = stack.fake
    version = _setup_version(stack)  # stores the label config in Redis, where the jobs read it
    fake.post_delay_s = 0.3  # each chunk of 3 takes about a second
    fake.tasks = fake.tasks[:12]
    event = {"action": "TASKS_CREATED", "project": {"id": int(ENA24_PROJECT)}, "tasks": fake.tasks}
    response, _ = _post(stack.url, "/webhook", event)
    assert response.json()["status"] == "queued" and "12 task(s) in 4 job(s)" in response.json()["detail"]
    wait_until(lambda: len(fake.predictions) >= 2, timeout=120, what="the first posts", interval=0.05)
    stack.server.kill()
    killed = time.monotonic()
    assert len(fake.predictions) < len(fake.tasks), "the outage must fall in the middle of the import"
    answers = _outage_answers(stack)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - killed)))
    stack.server.start()
    _assert_served_through_the_outage(answers, version)

    jobs = _prelabel_jobs(stack.client())
    assert len(jobs) == 4, "the append-only file kept every chunk job"
    infos = _all_ended(stack.url, jobs, timeout=120)
    assert stack.worker.alive(), "camtrap worker outlives the outage"
    for info in infos:
        assert info["status"] == "finished" or info["error"], info
    posted = Counter(p["task"] for p in fake.predictions if p["model_version"] == version)
    assert max(posted.values()) == 1, f"a task got two predictions of {version}: {posted}"

    # Whatever was not posted (a failed chunk), `camtrap prelabel --missing-only` completes, once each.
    command = [sys.executable, "-m", "backend.cli", "prelabel", "--project", ENA24_PROJECT, "--missing-only"]
    answer = subprocess.run(command, env=stack.env, capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr
    rerun = json.loads(answer.stdout)
    assert rerun["tasks"] == len(fake.tasks) - len(posted), (rerun, posted)
    reruns = _all_ended(stack.url, rerun["jobs"], timeout=120)
    assert all(info["status"] == "finished" for info in reruns), reruns
    posted = Counter(p["task"] for p in fake.predictions if p["model_version"] == version)
    assert set(posted) == {t["id"] for t in fake.tasks} and max(posted.values()) == 1, posted
