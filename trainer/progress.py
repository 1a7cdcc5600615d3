"""Progress of a training run: the stage it is in and its latest figures, in ``job.meta`` and the log.

``GET /jobs/{id}`` shows ``job.meta`` as it is, so the keys below are part of the API:
``stage`` (a :class:`Stage` value), ``stage_started_at``, ``updated_at``, ``detail`` (a short sentence),
``pid`` (the process running the job),
and per stage: ``counts`` (export, crops, split), ``epoch``/``epochs``/``loss``/``val_macro_f1``
(training), ``starting_weights`` (name, source, sha256, pretrained: what the backbone started from) and
``pretrained`` (false: "no pretrained weights", random init), ``error`` (one sentence, on failure).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import redis
from rq.job import Job

from backend.redaction import redact
from trainer.errors import WorkerLostError

logger = logging.getLogger(__name__)


class Stage(StrEnum):
    """The steps of a training job, in run order."""

    QUEUED = "queued"
    EXPORTING = "exporting"
    DOWNLOADING = "downloading"
    CROPPING = "cropping"
    SPLITTING = "splitting"
    TRAINING = "training"
    EVALUATING = "evaluating"
    PUBLISHING = "publishing"
    DONE = "done"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Progress:
    """Reports a run's progress to its RQ job (when there is one) and to the log.

    Every report also checks that the process that started the job is still there: RQ's work horse
    is a forked child, and if the worker above it is killed the horse would train on with nobody to
    record its outcome. It stops instead (:class:`WorkerLostError`), so the job ends failed.

    Args:
        job: The current RQ job, or None when run from the CLI.
    """

    def __init__(self, job: Job | None = None) -> None:
        self.job = job
        self.meta: dict[str, Any] = dict(job.meta) if job is not None else {}
        self.meta["pid"] = os.getpid()
        self._parent_pid = os.getppid()
        self.stage_name: Stage = Stage.QUEUED
        self._unsaved = False

    def stage(self, stage: Stage, detail: str = "", **info: Any) -> None:
        """Enter ``stage`` (resets the per-stage figures) and save."""
        self.stage_name = stage
        for key in ("epoch", "epochs", "loss", "val_macro_f1", "done", "total"):
            self.meta.pop(key, None)
        self.meta.update(stage=stage.value, stage_started_at=_now(), detail=detail)
        logger.info("stage %s%s", stage.value, f": {detail}" if detail else "")
        self.update(**info)

    def update(self, **info: Any) -> None:
        """Merge ``info`` into the meta and save it (cheap: one Redis HSET; skipped while Redis is down)."""
        self._check_parent()
        self.meta.update(info, updated_at=_now())
        self._save()

    def check_alive(self) -> None:
        """Raise :class:`WorkerLostError` if the worker above this job died (no Redis call)."""
        self._check_parent()

    def fail(self, message: str) -> None:
        """Record the one-sentence reason of a failure (the stage stays where it failed)."""
        self.meta.update(error=redact(message), updated_at=_now())
        logger.error("failed during %s: %s", self.stage_name.value, message)
        self._save()

    def _save(self) -> None:
        """Save the meta to the job; a Redis outage only delays it (the next report saves it all).

        Progress is a report, not the work: a training run of half an hour must not die because Redis
        restarted under it (``tests/reliability/test_redis_restart.py``). The outcome is saved by RQ
        when the job ends, once Redis is back.
        """
        if self.job is None:
            return
        self.job.meta = self.meta
        try:
            self.job.save_meta()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not self._unsaved:
                logger.warning("progress not saved, Redis is unavailable (%s); the job goes on", exc)
            self._unsaved = True
        else:
            if self._unsaved:
                logger.info("Redis is back: progress saved again")
            self._unsaved = False

    def _check_parent(self) -> None:
        if self.job is not None and os.getppid() != self._parent_pid:
            raise WorkerLostError(
                f"the worker process {self._parent_pid} that started this job died during {self.stage_name.value}; "
                "the job stopped without publishing anything"
            )
