"""The ``relabel-<project>`` job's life: a newer promotion supersedes it, ``DELETE /jobs/…`` cancels it.

Real Redis and a real ``python -m trainer worker`` (forking work horses); the fake Label Studio of
``tests/backend/fake_ls.py`` answers every image after ``delay_s``, so the job is still classifying when
the test acts on it. The detector is the tiny random-weight YOLOv5 (no GPU, nothing mocked).
"""

from __future__ import annotations

from collections import Counter

from rq.job import Job

from backend.config import Settings
from backend.contracts.keys import RedisKeys
from backend.contracts.label_jobs import enqueue_relabel
from backend.contracts.promotion import set_current
from backend.service.jobs import cancel_job, job_info
from tests.backend.bundles import write_bundle
from tests.learning.conftest import ENA24_PROJECT
from tests.learning.test_chunked_prelabel import _finished, _store_schema, _unannotate
from tests.processes import wait_until

TASKS = 8


def _promote(fake, settings: Settings, redis_client, version: str) -> str:
    labels = sorted(fake.species)
    write_bundle(settings.models_dir, ENA24_PROJECT, version, favourite=labels[0], labels=labels)
    set_current(settings.models_dir, ENA24_PROJECT, version, redis_client, RedisKeys())
    return f"md_tiny_md_v5+{version}"


def _classifying(redis_client, job_id: str) -> None:
    def busy() -> bool:
        info = job_info(redis_client, job_id)
        return bool(info and info["status"] == "started" and info["progress"].get("phase") == "classify")

    wait_until(busy, timeout=120, what=f"{job_id} to be classifying", interval=0.05)


def _slow_project(ena24_ls, redis_client) -> list[int]:
    fake, _ = ena24_ls
    _store_schema(redis_client, fake)
    fake.tasks = fake.tasks[:TASKS]
    fake.delay_s = 1.0  # every image download takes a second: the job stays in its classify phase
    return _unannotate(fake, TASKS)


def test_a_newer_promotion_supersedes_a_running_relabel(ena24_ls, rq_worker, redis_client, settings: Settings):
    fake, _ = ena24_ls
    unannotated = _slow_project(ena24_ls, redis_client)
    _promote(fake, settings, redis_client, "v2")
    first = enqueue_relabel(redis_client, settings, ENA24_PROJECT, trigger="v2 promoted")
    _classifying(redis_client, first)
    newest = _promote(fake, settings, redis_client, "v3")
    second = enqueue_relabel(redis_client, settings, ENA24_PROJECT, trigger="v3 promoted")
    assert second == first == f"relabel-{ENA24_PROJECT}", "one re-label job per project"
    [info] = _finished(redis_client, [second])
    assert info["status"] == "finished", info
    assert Job.fetch(second, connection=redis_client).meta["trigger"] == "v3 promoted"
    assert info["result"]["model_version"] == newest
    assert {p["model_version"] for p in fake.predictions} == {newest}, "the superseded run pushed nothing"
    per_task = Counter(p["task"] for p in fake.predictions)
    assert max(per_task.values()) == 1 and set(per_task) <= set(unannotated)
    assert len(per_task) + info["result"]["empty"] + info["result"]["failed"] == TASKS


def test_delete_stops_a_running_relabel_before_it_pushes(ena24_ls, rq_worker, redis_client, settings: Settings):
    fake, _ = ena24_ls
    _slow_project(ena24_ls, redis_client)
    _promote(fake, settings, redis_client, "v2")
    job_id = enqueue_relabel(redis_client, settings, ENA24_PROJECT, trigger="v2 promoted")
    _classifying(redis_client, job_id)
    assert cancel_job(redis_client, job_id) is not None

    def ended() -> dict | None:
        info = job_info(redis_client, job_id)
        return info if info and info["status"] in ("stopped", "canceled", "failed", "finished") else None

    info = wait_until(ended, timeout=60, what=f"{job_id} to stop", interval=0.1)
    assert info["status"] == "stopped", info
    assert fake.predictions == [] and fake.bulk_calls == [], "a stopped re-label pushes nothing"
