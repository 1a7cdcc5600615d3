"""Bulk pre-annotation, one chunk of task ids per job: predictions pushed to Label Studio through its API.

Label Studio gives ``/predict`` 100 s; a large import predicted on demand would hit that limit. On
``TASKS_CREATED`` (or ``camtrap prelabel --project N``) the backend splits the task ids into chunks of
``PRELABEL_CHUNK_SIZE`` and enqueues one job per chunk on queue ``prelabel`` (``backend.service.jobs``), so
every worker on every machine shares an import. A job reads its tasks from Label Studio through the task
*list* (``LabelStudioClient.get_tasks``, 16 ids a call: ``GET /api/tasks/<id>`` would make Label Studio 1.23
call the backend's ``/predict`` for a task without predictions before answering, so the detector would run in
the backend, not on the workers), skips one that already has a prediction of the current ``model_version`` (a
retried chunk, a task imported twice: never posted twice for one version), predicts the rest with the same
detector, detection store, served classifier, thresholds and label mapping the service uses, and posts each
prediction as soon as it is made (``POST /api/predictions/``), so a worker killed mid-chunk loses at most the
task in hand and its retry posts only what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from backend.config import Settings
from backend.contracts import registry
from backend.contracts.detection_store import DetectionStore
from backend.contracts.keys import RedisKeys
from backend.contracts.setup_record import SetupRecord
from backend.errors import BackendError
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.label_config import LabelMapping, parse_label_config
from backend.labelstudio.task_predictor import predict_tasks
from backend.vision.classifier import SpeciesClassifier, load_served
from backend.vision.device import resolve_device
from backend.vision.pipeline import Pipeline, PipelineObserver
from backend.vision.thresholds import Thresholds
from trainer.progress import Progress

logger = logging.getLogger(__name__)

#: Tasks predicted per call of the pipeline (and per progress report).
CHUNK = 16


@dataclass
class LabelRun:
    """What predicting a project's tasks needs, built once per job like the service builds it."""

    project: str
    pipeline: Pipeline
    client: LabelStudioClient
    mapping: LabelMapping
    classifier: SpeciesClassifier | None
    version: str
    thresholds: Thresholds

    def predict(self, tasks: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One Label Studio prediction per task (``id`` and ``data``), in order."""
        slim = [{"id": t["id"], "data": t.get("data") or {}} for t in tasks]
        done = predict_tasks(
            self.pipeline,
            self.client,
            slim,
            self.mapping,
            self.classifier,
            self.version,
            self.thresholds,
            context=f"project {self.project}",
        )
        return done.predictions


@contextmanager
def label_run(
    project: str, *, settings: Settings, connection: redis.Redis | None, observer: PipelineObserver | None = None
) -> Iterator[LabelRun]:
    """The detector (loaded at its first store miss), the served classifier, /setup data, label mapping, LS client."""
    from trainer.lazy_detector import LazyDetector

    record = _setup_record(connection, RedisKeys(settings.redis_prefix), project)
    thresholds = Thresholds.from_settings(settings).with_overrides(record.extra_params)
    detector = LazyDetector(settings)
    classifier = load_served(settings.models_dir, project, resolve_device(settings.detector_device))
    version = registry.model_version(detector.id, classifier.version if classifier else None)
    pipeline = Pipeline(
        detector,
        fetch_threads=settings.download_concurrency,
        max_pixels=settings.max_image_pixels,
        store=DetectionStore.under(settings.data_dir),
        observer=observer,
    )
    client = LabelStudioClient(settings, url=settings.label_studio_url or record.hostname)
    try:
        label_config = record.schema or client.get_json(f"/api/projects/{project}").get("label_config")
        mapping = parse_label_config(label_config or "")
        yield LabelRun(project, pipeline, client, mapping, classifier, version, thresholds)
    finally:
        pipeline.close()
        client.close()


def has_version(task: dict[str, Any], version: str) -> bool:
    """True when the task already holds a prediction of ``version``."""
    return any(isinstance(p, dict) and p.get("model_version") == version for p in task.get("predictions") or [])


def prelabel(
    project: str,
    task_ids: Sequence[int],
    *,
    settings: Settings,
    connection: redis.Redis | None,
    progress: Progress,
) -> dict[str, Any]:
    """Predict the tasks ``task_ids`` and post one prediction per task that lacks the current version.

    Args:
        project: Project id.
        task_ids: Ids of the chunk's tasks (each is read from Label Studio).
        settings: Detector, thresholds and Label Studio access.
        connection: Redis, for the project's stored /setup data.
        progress: Where ``done``/``total`` go.

    Returns:
        Counts: ``tasks``, ``posted``, ``skipped`` (already had this version), ``empty`` (no result to
        post), ``failed`` (Label Studio refused it, or the task could not be read).
    """
    counts = {"tasks": len(task_ids), "posted": 0, "skipped": 0, "empty": 0, "failed": 0}
    with label_run(project, settings=settings, connection=connection) as run:
        progress.update(done=0, total=len(task_ids))
        for start in range(0, len(task_ids), CHUNK):
            todo = []
            ids = [int(t) for t in task_ids[start : start + CHUNK]]
            try:
                found = {int(t["id"]): t for t in run.client.get_tasks(project, ids)}
            except BackendError as exc:
                logger.warning("project %s, tasks %s..%s: cannot be read: %s", project, ids[0], ids[-1], exc)
                found = {}
            for task_id in ids:
                task = found.get(task_id)
                if task is None:
                    logger.warning("project %s, task %s: not read from Label Studio", project, task_id)
                    counts["failed"] += 1
                elif has_version(task, run.version):
                    counts["skipped"] += 1
                else:
                    todo.append(task)
            for task, prediction in zip(todo, run.predict(todo), strict=True):
                counts[_post(run.client, task["id"], prediction)] += 1
            done = min(start + CHUNK, len(task_ids))
            progress.update(done=done, total=len(task_ids), counts=dict(counts))
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
    try:
        client.create_prediction(
            {
                "task": task_id,
                "result": prediction["result"],
                "score": prediction.get("score"),
                "model_version": prediction.get("model_version"),
            }
        )
    except BackendError as exc:
        logger.warning("task %s: Label Studio refused the prediction: %s", task_id, exc)
        return "failed"
    return "posted"
