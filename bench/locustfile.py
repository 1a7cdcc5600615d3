"""The locust scenario of ``bench.load``: annotators opening and saving tasks, one admin pressing Start Training.

Run only by locust in its own process (``locust -f bench/locustfile.py --headless ...``, started by
``bench.load``): locust patches the standard library with gevent when imported, so nothing else
imports this module. Everything it needs comes from the environment ``bench.load`` sets:

- ``LOAD_PROJECT``: the Label Studio project id; ``LOAD_LABEL_CONFIG``: a file with its label config.
- ``LOAD_PHOTOS``: comma-separated photo names served by the fake Label Studio.
- ``LOAD_TRAIN_AT_S``: seconds after the admin starts before it presses Start Training.
- ``LOAD_PREDICT``: ``0`` for annotators that save without opening (profiling).

Each request is what Label Studio 1.23 sends (see shared/docs/label-studio-protocol.md): before a
prediction ``GET /health`` and ``POST /setup``, then ``POST /predict`` with one full task; saving is
the ``ANNOTATION_CREATED`` webhook delivery; Start Training is the ``START_TRAINING`` webhook.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, between, task

PROJECT = os.environ.get("LOAD_PROJECT", "1")
#: The project as Label Studio names it in /setup and /predict: "<id>.<created_at epoch>".
LS_PROJECT = f"{PROJECT}.1764000000"
LABEL_CONFIG = Path(os.environ["LOAD_LABEL_CONFIG"]).read_text() if "LOAD_LABEL_CONFIG" in os.environ else ""
PHOTOS = [p for p in os.environ.get("LOAD_PHOTOS", "").split(",") if p]
TRAIN_AT_S = float(os.environ.get("LOAD_TRAIN_AT_S", "10"))
#: "0": annotators save without opening (profiling: the other endpoints without the detector's CPU share).
PREDICT = os.environ.get("LOAD_PREDICT", "1") != "0"
#: Seconds an annotator spends drawing and choosing before saving.
THINK_S = (1.0, 3.0)
#: Every opened task gets a fresh id and image reference: a photo the backend has not seen (see bench.load).
OPENED = itertools.count(1)
#: The webhook answer that means the event was not recorded (Redis unavailable).
NOT_RECORDED = "redis_unavailable"
#: ``accepted``: answered at the backend's 50 ms deadline, the event still being recorded; counted in a row of
#: its own (bench.load's ANSWERED_BEFORE_RECORDED) besides the /webhook request itself.
ANSWERED_EARLY, ANSWERED_EARLY_ROW = "accepted", "/webhook answered before recorded"


def project_object() -> dict[str, Any]:
    """The ``project`` of a webhook delivery (Label Studio sends the whole project; these are the fields read)."""
    return {"id": int(PROJECT), "title": "camera traps (load)", "label_config": LABEL_CONFIG}


def opened_task(opened: int) -> dict[str, Any]:
    """A task as Label Studio's ``TaskSimpleSerializer`` sends it in ``/predict``, its image never seen before."""
    photo = PHOTOS[opened % len(PHOTOS)]
    return {
        "id": 100_000 + opened,
        "data": {"image": f"/data/upload/{PROJECT}/open-{opened}/{photo}", "location": f"site-{opened % 3}"},
        "meta": {},
        "created_at": "2026-11-20T10:00:00.000000Z",
        "updated_at": "2026-11-20T10:00:00.000000Z",
        "is_labeled": False,
        "overlap": 1,
        "inner_id": opened,
        "total_annotations": 0,
        "cancelled_annotations": 0,
        "total_predictions": 0,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": None,
        "project": int(PROJECT),
        "updated_by": None,
        "file_upload": opened,
        "comment_authors": [],
        "annotations": [],
        "predictions": [],
    }


def annotation_created(task: dict[str, Any], prediction: dict[str, Any]) -> dict[str, Any]:
    """The ``ANNOTATION_CREATED`` delivery of saving ``task``: the annotator kept the predicted regions."""
    opened = task["inner_id"]
    annotation = {
        "id": 500_000 + opened,
        "result": prediction.get("result") or [],
        "was_cancelled": False,
        "ground_truth": False,
        "created_at": "2026-11-20T10:00:00.000000Z",
        "updated_at": "2026-11-20T10:00:00.000000Z",
        "lead_time": 12.5,
        "task": task["id"],
        "project": int(PROJECT),
        "completed_by": 1,
        "parent_prediction": None,
    }
    return {
        "action": "ANNOTATION_CREATED",
        "project": project_object(),
        "task": {**task, "is_labeled": True, "total_annotations": 1},
        "annotation": annotation,
    }


class Annotator(HttpUser):
    """Opens a task (health, setup, predict), thinks, saves it (webhook); again after a short pause."""

    weight = 1
    wait_time = between(0.5, 1.5)

    @task
    def open_and_save(self) -> None:
        self.client.get("/health", name="/health")
        self.client.post("/setup", json={"project": LS_PROJECT, "schema": LABEL_CONFIG, "extra_params": None})
        task_ = opened_task(next(OPENED))
        body = {
            "tasks": [task_],
            "project": LS_PROJECT,
            "label_config": LABEL_CONFIG,
            "params": {"login": None, "password": None, "context": None},
        }
        results: list[dict[str, Any]] = [{"result": []}]
        if PREDICT:
            with self.client.post("/predict", json=body, name="/predict", catch_response=True) as response:
                answered = response.json().get("results") if response.ok else None
                if not answered or len(answered) != 1 or "result" not in answered[0]:
                    response.failure(
                        f"/predict answered {response.status_code} without one result: {response.text[:200]}"
                    )
                    return
                results = answered
        gevent.sleep(random.uniform(*THINK_S))
        with self.client.post(
            "/webhook", json=annotation_created(task_, results[0]), name="/webhook", catch_response=True
        ) as response:
            status = response.json().get("status") if response.ok else None
            if status is None or status == NOT_RECORDED:
                response.failure(f"/webhook answered {response.status_code}: {response.text[:200]}")
            elif status == ANSWERED_EARLY:
                self.environment.events.request.fire(
                    request_type="POST",
                    name=ANSWERED_EARLY_ROW,
                    response_time=response.elapsed.total_seconds() * 1000,
                    response_length=0,
                    exception=None,
                    context={},
                )


class Admin(HttpUser):
    """Presses Start Training once, ``LOAD_TRAIN_AT_S`` after it starts, then follows the job until it ends."""

    fixed_count = 1
    wait_time = between(2.0, 2.0)

    def on_start(self) -> None:
        self.started = time.monotonic()
        self.job: str | None = None
        self.ended = False

    @task
    def train_and_follow(self) -> None:
        if self.ended:
            return
        if self.job is None:
            if time.monotonic() - self.started < TRAIN_AT_S:
                return
            body = {"action": "START_TRAINING", "project": project_object()}
            with self.client.post("/webhook", json=body, name="/webhook START_TRAINING", catch_response=True) as answer:
                self.job = answer.json().get("job") if answer.ok else None
                if self.job is None:
                    answer.failure(f"Start Training answered {answer.status_code}: {answer.text[:200]}")
                    self.ended = True
            return
        with self.client.get(f"/jobs/{self.job}", name="/jobs/[id]", catch_response=True) as answer:
            status = answer.json().get("status") if answer.ok else None
            if status in ("failed", "stopped", "canceled") or status is None:
                answer.failure(f"training job: {answer.status_code} {answer.text[:300]}")
                self.ended = True
            elif status == "finished":
                self.ended = True
