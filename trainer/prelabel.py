"""Bulk pre-annotation of newly imported tasks: predictions pushed to Label Studio through its API.

Label Studio gives ``/predict`` 100 s; a large import predicted on demand would hit that limit, and the
first annotators would wait. On ``TASKS_CREATED`` the backend enqueues this job on queue ``prelabel``:
the worker builds the same ``backend.service.runtime.Runtime`` the service uses (same detector, the project's
served classifier, same thresholds and label mapping), predicts the tasks in chunks and posts each
prediction to ``POST /api/predictions/`` with the project's current ``model_version``, so Label
Studio finds them and never calls ``/predict`` for those tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis

from backend.config import Settings
from backend.contracts import registry
from backend.contracts.detection_store import DetectionStore
from backend.contracts.keys import RedisKeys
from backend.contracts.setup_record import SetupRecord
from backend.errors import BackendError
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.label_config import parse_label_config
from backend.labelstudio.task_predictor import predict_tasks
from backend.vision.classifier import load_served
from backend.vision.device import resolve_device
from backend.vision.pipeline import Pipeline
from backend.vision.thresholds import Thresholds
from trainer.progress import Progress

logger = logging.getLogger(__name__)

#: Tasks predicted per call of the runtime (and per progress report).
CHUNK = 16
PREDICTIONS_PATH = "/api/predictions/"


def prelabel(
    project: str,
    tasks: Sequence[dict[str, Any]],
    *,
    settings: Settings,
    connection: redis.Redis | None,
    progress: Progress,
) -> dict[str, Any]:
    """Predict ``tasks`` and post one prediction per task to Label Studio.

    Args:
        project: Project id.
        tasks: Task objects with at least ``id`` and ``data`` (as ``TASKS_CREATED`` sends them).
        settings: Detector, thresholds and Label Studio access.
        connection: Redis, for the project's stored /setup data.
        progress: Where ``done``/``total`` go.

    Returns:
        Counts: ``tasks``, ``posted``, ``empty`` (no result to post), ``failed`` (Label Studio refused it).
    """
    from backend.vision.detector import Detector

    record = _setup_record(connection, RedisKeys(settings.redis_prefix), project)
    thresholds = Thresholds.from_settings(settings).with_overrides(record.extra_params)
    detector = Detector.load(settings)
    classifier = load_served(settings.models_dir, project, resolve_device(settings.detector_device))
    version = registry.model_version(detector.id, classifier.version if classifier else None)
    pipeline = Pipeline(
        detector,
        fetch_threads=settings.download_concurrency,
        max_pixels=settings.max_image_pixels,
        store=DetectionStore.under(settings.data_dir),
    )
    counts = {"tasks": len(tasks), "posted": 0, "empty": 0, "failed": 0}
    client = LabelStudioClient(settings, url=settings.label_studio_url or record.hostname)
    try:
        label_config = record.schema or client.get_json(f"/api/projects/{project}").get("label_config")
        mapping = parse_label_config(label_config or "")
        progress.update(done=0, total=len(tasks))
        for start in range(0, len(tasks), CHUNK):
            chunk = [{"id": t["id"], "data": t.get("data") or {}} for t in tasks[start : start + CHUNK]]
            done = predict_tasks(
                pipeline, client, chunk, mapping, classifier, version, thresholds, context=f"project {project}"
            )
            for task, prediction in zip(chunk, done.predictions, strict=True):
                counts[_post(client, task["id"], prediction)] += 1
            progress.update(done=min(start + CHUNK, len(tasks)), total=len(tasks), counts=dict(counts))
    finally:
        pipeline.close()
        client.close()
    logger.info("project %s: pre-annotated %s", project, counts)
    return counts


def _setup_record(connection: redis.Redis | None, keys: RedisKeys, project: str) -> SetupRecord:
    if connection is None:
        return SetupRecord()
    try:
        return SetupRecord.load(connection, keys, project) or SetupRecord()
    except redis.RedisError as exc:
        logger.warning("cannot read the stored /setup data of project %s: %s", project, exc)
        return SetupRecord()


def _post(client: LabelStudioClient, task_id: int, prediction: dict[str, Any]) -> str:
    if not prediction.get("result"):
        return "empty"
    body = {
        "task": task_id,
        "result": prediction["result"],
        "score": prediction.get("score"),
        "model_version": prediction.get("model_version"),
    }
    try:
        client.post_json(PREDICTIONS_PATH, body)
    except BackendError as exc:
        logger.warning("task %s: Label Studio refused the prediction: %s", task_id, exc)
        return "failed"
    return "posted"
