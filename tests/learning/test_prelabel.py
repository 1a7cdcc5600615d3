"""TASKS_CREATED -> a ``prelabel`` job on a real worker -> one prediction per task posted to Label Studio."""

from __future__ import annotations

import json

from backend.config import Settings
from backend.contracts.keys import RedisKeys
from backend.service.jobs import job_info
from backend.service.webhooks import handle_event
from tests.learning.conftest import ENA24_PROJECT
from tests.processes import wait_until
from tests.trainer.fake_label_studio import label_config


def test_tasks_created_pushes_one_prediction_per_task_with_the_served_version(
    ena24_ls, rq_worker, redis_client, settings: Settings
):
    fake, _ = ena24_ls
    redis_client.hset(
        RedisKeys().setup(ENA24_PROJECT), mapping={"schema": label_config(fake.species), "extra_params": json.dumps({})}
    )
    tasks = [{"id": t["id"], "data": t["data"], "annotations": []} for t in fake.tasks[:3]]
    answer = handle_event(
        {"action": "TASKS_CREATED", "project": {"id": int(ENA24_PROJECT)}, "tasks": tasks}, redis_client, settings
    )
    assert answer.status == "queued" and answer.job
    info = wait_until(
        lambda: (i := job_info(redis_client, answer.job)) and i["status"] in ("finished", "failed") and i,
        timeout=180,
        what="the pre-annotation job",
        interval=0.2,
        errors="raise",
    )
    assert info["status"] == "finished", info
    counts = info["result"]
    assert counts["tasks"] == 3 and counts["failed"] == 0
    assert counts["posted"] == len(fake.predictions) and counts["posted"] + counts["empty"] == 3
    assert counts["posted"] >= 1, "the generated detector is biased to emit boxes"
    for body in fake.predictions:
        assert body["task"] in {t["id"] for t in tasks}
        assert body["model_version"] == "md_tiny_md_v5+none"
        assert body["result"] and all(r["to_name"] == "image" for r in body["result"])


def test_tasks_created_is_ignored_when_bulk_pre_annotation_is_off(redis_client, settings: Settings):
    off = settings.model_copy(update={"prelabel_on_import": False})
    answer = handle_event(
        {"action": "TASKS_CREATED", "project": {"id": 1}, "tasks": [{"id": 1, "data": {}}]}, redis_client, off
    )
    assert answer.status == "ignored"
    assert redis_client.keys("rq:job:*") == []
