"""Re-label on promotion: every unannotated task re-classified from its stored detections, pushed in bulk.

Job ``relabel-<project>`` (``backend.contracts.relabel_job``) runs after the project's served classifier
changed. It reads the project's tasks page by page, leaves those with a human annotation alone, and runs
the pipeline with the detection store (``backend.vision.pipeline``): an image whose detections are
stored skips the detector and only its crops go through the new classifier; a task with no stored
entry falls back to the detector (counted as ``detected``). The predictions, stamped with the new
``model_version`` and scored with the species confidence, are pushed least-confident first through
``POST /api/projects/{id}/import/predictions`` in chunks of :data:`PUSH_CHUNK`; Label Studio 1.23
drops predictions that do not fit the label config and still answers 201, so a ``created`` that
differs from what was sent fails the job, naming the chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from backend.config import Settings
from backend.errors import LabelStudioError
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.predictions import IMAGE_CHOICE_ID
from trainer.errors import TrainerError
from trainer.prelabel import CHUNK, has_version, label_run
from trainer.progress import Progress

logger = logging.getLogger(__name__)

#: Predictions per bulk import call (Label Studio 1.23 takes ~400/s in chunks of 500-2,000).
PUSH_CHUNK = 500
#: Tasks read per page from Label Studio.
PAGE_SIZE = 100


class RelabelError(TrainerError):
    """Label Studio did not create every prediction it was sent, or refused the push (after its retries)."""


@dataclass
class _Observed:
    """Counts what the pipeline did (its observer): detector images, classified crops."""

    detector: int = 0
    crops: int = 0

    def stage_seconds(self, stage: str, seconds: float) -> None:
        pass

    def image_failed(self, stage: str) -> None:
        pass

    def detector_images(self, count: int) -> None:
        self.detector += count

    def classifier_crops(self, count: int) -> None:
        self.crops += count


def is_annotated(task: dict[str, Any]) -> bool:
    """True when a person labelled the task (a non-cancelled annotation, or LS's count of them)."""
    if "total_annotations" in task:
        return int(task.get("total_annotations") or 0) > 0
    return any(not a.get("was_cancelled") for a in task.get("annotations") or [] if isinstance(a, dict))


def species_confidence(prediction: dict[str, Any]) -> float:
    """The species confidence of a prediction: its most confident species choice, else its own score."""
    scores = [
        float(r["score"])
        for r in prediction.get("result") or []
        if r.get("type") == "choices" and r.get("id") != IMAGE_CHOICE_ID and r.get("score") is not None
    ]
    if scores:
        return max(scores)
    return float(prediction.get("score") or 0.0)


def push(
    client: LabelStudioClient,
    project: str,
    predictions: Sequence[dict[str, Any]],
    *,
    chunk: int = PUSH_CHUNK,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Import ``predictions`` in order, ``chunk`` at a time, through the bulk endpoint; returns how many.

    One client (one connection, one access token) for every chunk and no read between them: the push
    costs what Label Studio's own bulk import costs (``bench.relabel_push`` compares the two).

    Raises:
        RelabelError: Label Studio created fewer (or more) predictions than a chunk held, or kept failing.
    """
    done = 0
    for start in range(0, len(predictions), chunk):
        part = predictions[start : start + chunk]
        try:
            created = client.import_predictions(project, part)
        except LabelStudioError as exc:  # after LABEL_STUDIO_RETRIES tries
            raise RelabelError(
                f"Label Studio at {client.base_url} did not take the predictions of project {project}'s "
                f"tasks {part[0]['task']}..{part[-1]['task']} ({exc})"
            ) from exc
        if created != len(part):
            raise RelabelError(
                f"project {project}: Label Studio created {created} of the {len(part)} predictions of tasks "
                f"{part[0]['task']}..{part[-1]['task']} (see its log: they do not fit the label config)"
            )
        done += created
        if on_chunk is not None:
            on_chunk(done)
    return done


def relabel(project: str, *, settings: Settings, connection: redis.Redis | None, progress: Progress) -> dict[str, Any]:
    """Re-classify and push one prediction of the served version per unannotated task.

    Returns:
        Counts: ``tasks``, ``annotated``, ``skipped`` (already holds a prediction of the version: never two for
        one version), ``pushed``, ``empty`` (nothing to push), ``failed`` (image
        unreadable), ``detected`` (store misses the detector ran on), ``crops``, and ``model_version``.

    Raises:
        RelabelError: Label Studio created fewer (or more) predictions than it was sent, or kept failing.
    """
    observed = _Observed()
    counts: dict[str, Any] = {"tasks": 0, "annotated": 0, "skipped": 0, "pushed": 0, "empty": 0, "failed": 0}
    with label_run(project, settings=settings, connection=connection, observer=observed) as run:
        counts["model_version"] = run.version
        progress.update(stage="relabelling", detail=f"reading the tasks of project {project}")
        todo = []
        for task in run.client.iter_tasks(project, page_size=PAGE_SIZE):
            counts["tasks"] += 1
            if is_annotated(task):
                counts["annotated"] += 1
            elif has_version(task, run.version):
                counts["skipped"] += 1  # Label Studio already asked /predict for it (Retrieve Predictions)
            else:
                todo.append({"id": task["id"], "data": task.get("data") or {}})
        ready: list[dict[str, Any]] = []
        progress.update(done=0, total=len(todo), phase="classify")
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            for task, prediction in zip(chunk, run.predict(chunk), strict=True):
                if not prediction.get("result"):
                    counts["failed" if prediction.get("score") is None else "empty"] += 1
                    continue
                ready.append(
                    {
                        "task": task["id"],
                        "result": prediction["result"],
                        "score": species_confidence(prediction),
                        "model_version": run.version,
                    }
                )
            progress.update(done=min(start + CHUNK, len(todo)), total=len(todo), phase="classify")
        ready.sort(key=lambda p: p["score"])
        progress.update(done=0, total=len(ready), phase="push")

        def pushed(done: int) -> None:
            counts["pushed"] = done
            progress.update(done=done, total=len(ready), phase="push")

        push(run.client, project, ready, on_chunk=pushed)
    counts["detected"] = observed.detector
    counts["crops"] = observed.crops
    logger.info("project %s: re-labelled %s", project, counts)
    return counts
