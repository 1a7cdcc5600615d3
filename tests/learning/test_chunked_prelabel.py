"""Pre-annotation in chunks of task ids on real RQ workers, and re-label after a promotion from the store.

Real Redis, real ``python -m trainer worker`` processes (forking work horses), the fake Label Studio of
``tests/backend/fake_ls.py`` (task paging, single and bulk prediction import as Label Studio 1.23).
The detector is the tiny random-weight YOLOv5 (no GPU, nothing mocked).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
from rq.job import Job

from backend.config import Settings
from backend.contracts.keys import RedisKeys
from backend.contracts.label_jobs import enqueue_prelabel, enqueue_relabel
from backend.labelstudio.client import LabelStudioClient
from backend.service.jobs import job_info
from backend.service.webhooks import handle_event
from tests.backend.bundles import write_bundle
from tests.learning.conftest import ENA24_PROJECT
from tests.learning.services import start_rq_worker
from tests.processes import wait_until
from tests.trainer.fake_label_studio import label_config


def _finished(redis_client, job_ids: list[str], timeout: float = 240) -> list[dict]:
    def done() -> list[dict] | None:
        infos = [job_info(redis_client, j) for j in job_ids]
        if all(i and i["status"] in ("finished", "failed") for i in infos):
            return infos  # type: ignore[return-value]
        return None

    return wait_until(done, timeout=timeout, what="the label jobs", interval=0.2, errors="raise")


def _store_schema(redis_client, fake) -> None:
    redis_client.hset(
        RedisKeys().setup(ENA24_PROJECT), mapping={"schema": label_config(fake.species), "extra_params": json.dumps({})}
    )


def _unannotate(fake, count: int) -> list[int]:
    for task in fake.tasks[:count]:
        task["annotations"] = []
    return [t["id"] for t in fake.tasks[:count]]


def test_tasks_created_chunks_run_on_two_workers_and_cover_every_task_once(
    ena24_ls, worker_env, redis_client, settings: Settings, tmp_path: Path
):
    fake, _ = ena24_ls
    _store_schema(redis_client, fake)
    workers = []
    try:
        tasks = [{"id": t["id"], "data": t["data"]} for t in fake.tasks[:12]]
        chunked = settings.model_copy(update={"prelabel_chunk_size": 3})
        answer = handle_event(
            {"action": "TASKS_CREATED", "project": {"id": int(ENA24_PROJECT)}, "tasks": tasks}, redis_client, chunked
        )
        assert answer.status == "queued" and "12 task(s) in 4 job(s)" in answer.detail
        jobs = [Job.fetch(j.decode(), connection=redis_client) for j in redis_client.lrange("rq:queue:prelabel", 0, -1)]
        assert len(jobs) == 4 and all(len(job.args[1]) == 3 for job in jobs), "job bodies carry 3 ids each"
        assert all(isinstance(i, int) for job in jobs for i in job.args[1]), "ids, not task bodies"
        workers = [start_rq_worker(worker_env, tmp_path / f"worker-{i}.log", redis_client) for i in range(2)]
        infos = _finished(redis_client, [job.id for job in jobs])
    finally:
        for worker in workers:
            worker.stop()
    assert [i["status"] for i in infos] == ["finished"] * 4, infos
    ran_on = {Job.fetch(job.id, connection=redis_client).worker_name for job in jobs}
    assert len(ran_on) == 2, f"both workers took chunks: {ran_on}"
    posted = Counter(p["task"] for p in fake.predictions)
    assert max(posted.values()) == 1, f"a task was posted twice: {posted}"
    results = [i["result"] for i in infos]
    assert sum(r["tasks"] for r in results) == 12
    assert sum(r["posted"] for r in results) == len(posted) >= 1
    assert sum(r["posted"] + r["empty"] for r in results) == 12
    assert set(posted) <= {t["id"] for t in tasks}


def test_a_worker_killed_mid_chunk_loses_no_task_and_posts_nothing_twice(
    ena24_ls, worker_env, redis_client, settings: Settings, tmp_path: Path
):
    fake, _ = ena24_ls
    _store_schema(redis_client, fake)
    fake.post_delay_s = 0.4
    ids = [t["id"] for t in fake.tasks[:10]]
    worker = start_rq_worker(worker_env, tmp_path / "worker.log", redis_client)
    try:
        [job_id] = enqueue_prelabel(redis_client, settings, ENA24_PROJECT, ids, trigger="test")
        wait_until(lambda: len(fake.predictions) >= 2, timeout=180, what="the first posts", interval=0.05)
        horses = psutil.Process(worker.pid).children(recursive=True)
        assert horses, "the worker forks a work horse per job"
        for horse in horses:
            os.kill(horse.pid, signal.SIGKILL)
        killed_at = len(fake.predictions)
        [info] = _finished(redis_client, [job_id])
    finally:
        worker.stop()
    assert info["status"] == "finished", info
    result = info["result"]
    assert result["skipped"] >= killed_at >= 2, f"the retry skipped what was posted before the kill: {result}"
    posted = Counter(p["task"] for p in fake.predictions)
    assert max(posted.values()) == 1, f"a task was posted twice: {posted}"
    assert len(posted) + result["empty"] == len(ids), "no task lost"


def test_relabel_pushes_one_prediction_per_unannotated_task_from_the_store(
    ena24_ls, rq_worker, redis_client, settings: Settings
):
    annotated = 4
    fake, _ = ena24_ls
    _store_schema(redis_client, fake)
    fake.tasks = fake.tasks[: 8 + annotated]
    unannotated = _unannotate(fake, 8)
    [first] = enqueue_prelabel(redis_client, settings, ENA24_PROJECT, unannotated, trigger="test")
    [pre] = _finished(redis_client, [first])
    assert pre["status"] == "finished", pre
    before = len(fake.predictions)
    write_bundle(
        settings.models_dir, ENA24_PROJECT, "v2", favourite=sorted(fake.species)[0], labels=sorted(fake.species)
    )
    from backend.contracts.promotion import set_current

    set_current(settings.models_dir, ENA24_PROJECT, "v2", redis_client, RedisKeys())
    job_id = enqueue_relabel(redis_client, settings, ENA24_PROJECT, trigger="test")
    assert job_id == f"relabel-{ENA24_PROJECT}"
    [info] = _finished(redis_client, [job_id])
    assert info["status"] == "finished", info
    result = info["result"]
    assert result["model_version"] == "md_tiny_md_v5+v2"
    assert (result["tasks"], result["annotated"]) == (8 + annotated, annotated)
    assert result["detected"] == 0, "every box came from the detection store: the detector did not run"
    assert result["crops"] > 0
    pushed = fake.predictions[before:]
    assert fake.bulk_calls == [len(pushed)], "one bulk import call"
    per_task = Counter(p["task"] for p in pushed)
    assert max(per_task.values()) == 1 and set(per_task) <= set(unannotated), per_task
    assert len(pushed) + result["empty"] + result["failed"] == 8
    assert {p["model_version"] for p in pushed} == {"md_tiny_md_v5+v2"}
    scores = [p["score"] for p in pushed]
    assert scores == sorted(scores), "least-confident first"
    assert info["progress"]["phase"] == "push"

    # A second run of the same version (a Retrieve Predictions, a retried job) pushes nothing twice.
    [again] = _finished(redis_client, [enqueue_relabel(redis_client, settings, ENA24_PROJECT, trigger="again")])
    assert again["status"] == "finished", again
    assert (again["result"]["skipped"], again["result"]["pushed"]) == (len(pushed), 0), again["result"]
    assert len(fake.predictions) == before + len(pushed)


def test_relabel_fails_loudly_when_label_studio_drops_predictions(
    ena24_ls, rq_worker, redis_client, settings: Settings
):
    fake, _ = ena24_ls
    fake.tasks = fake.tasks[:3]
    _unannotate(fake, 3)
    # The stored schema names the controls; Label Studio's own config does not know them any more.
    _store_schema(redis_client, fake)
    fake.project_info = lambda project: {"id": project, "label_config": "<View><Image name='x'/></View>"}  # type: ignore[method-assign]
    [info] = _finished(redis_client, [enqueue_relabel(redis_client, settings, ENA24_PROJECT, trigger="test")])
    assert info["status"] == "failed"
    assert "Label Studio created 0 of the" in info["error"] and "predictions" in info["error"]


def test_camtrap_prelabel_enqueues_chunks_of_ids_read_page_by_page(ena24_ls, worker_env, redis_client):
    fake, _ = ena24_ls
    fake.tasks = fake.tasks[:7]
    fake.predictions.append({"task": fake.tasks[0]["id"], "result": [], "model_version": "old"})
    env = {**worker_env, "PRELABEL_CHUNK_SIZE": "2"}
    command = [sys.executable, "-m", "backend.cli", "prelabel", "--project", ENA24_PROJECT]
    answer = subprocess.run([*command, "--missing-only"], env=env, capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr
    out = json.loads(answer.stdout)
    assert out["tasks"] == 6, "the task with a prediction is left out"
    jobs = [Job.fetch(j, connection=redis_client) for j in out["jobs"]]
    assert [job.args[1] for job in jobs] == [[2, 3], [4, 5], [6, 7]]
    assert all(job.origin == "prelabel" and job.retries_left == 2 for job in jobs)


def test_the_client_reads_tasks_page_by_page_and_counts_created_predictions(ena24_ls, settings: Settings):
    fake, _ = ena24_ls
    fake.tasks = fake.tasks[:7]
    with LabelStudioClient(settings) as client:
        tasks = list(client.iter_tasks(ENA24_PROJECT, page_size=3))
        assert [t["id"] for t in tasks] == [1, 2, 3, 4, 5, 6, 7]
        assert [p for p, _ in fake.requests if p.startswith("/api/tasks")] == ["/api/tasks/"] * 3
        exactly = list(client.iter_tasks(ENA24_PROJECT, page_size=7))
        assert len(exactly) == 7
        good = {"task": 1, "result": [{"from_name": "status", "to_name": "image"}], "model_version": "v"}
        bad = {"task": 2, "result": [{"from_name": "nope", "to_name": "image"}], "model_version": "v"}
        assert client.import_predictions(ENA24_PROJECT, [good, bad]) == 1
