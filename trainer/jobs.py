"""RQ entry points. Arguments are JSON-able; ``backend.service.jobs`` enqueues them by dotted name.

``trainer.jobs.train_project`` runs on queue ``training`` with job id ``train-<project>``; its progress
is in ``job.meta`` (see ``trainer.progress``) and its result is ``TrainOutcome.to_dict()``. On failure
``job.meta["error"]`` holds one sentence and ``job.meta["stage"]`` the stage it failed in.
``trainer.jobs.prelabel_tasks`` runs on queue ``prelabel`` (bulk pre-annotation of one chunk of task ids,
``trainer.prelabel``); ``trainer.jobs.relabel_project`` too, as ``relabel-<project>`` (``trainer.relabel``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from rq import get_current_job

from backend import redaction
from backend.config import Settings, get_settings
from backend.contracts.projects import project_id as parse_project_id
from backend.contracts.redis_client import TOOL, connect
from trainer.config import TrainConfig
from trainer.errors import TrainerError
from trainer.pipeline import run_training
from trainer.progress import Progress

logger = logging.getLogger(__name__)

#: The longest a job that ended waits for Redis to come back to record its outcome, in seconds (within
#: the 90 s lease RQ gives a running job between heartbeats).
END_REDIS_WAIT_S = 60.0


def train_project(project_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, evaluate, publish and gate the species classifier of one project.

    Args:
        project_id: Label Studio project id (``"7"``; ``"7.1714557000"`` is accepted).
        options: TrainConfig field overrides (``{"epochs": 5}``), on top of the worker's settings.

    Returns:
        The run's outcome: version, status (promoted / rejected), reason and headline metrics.
    """
    project = parse_project_id(project_id)
    job = get_current_job()
    job_id = job.id if job else f"train-{project}"

    def work(*, settings: Settings, connection: redis.Redis, progress: Progress) -> dict[str, Any]:
        config = TrainConfig.from_settings(settings, **(options or {}))
        outcome = run_training(
            project, settings=settings, config=config, job_id=job_id, connection=connection, progress=progress
        )
        return outcome.to_dict()

    return _run_job(work)


def prelabel_tasks(project_id: str, task_ids: list[int]) -> dict[str, Any]:
    """Predict one chunk of tasks (by id) and push the predictions to Label Studio.

    Args:
        project_id: Label Studio project id.
        task_ids: The chunk's task ids; each task is read from Label Studio.

    Returns:
        Counts of tasks, posted, skipped (already had this version), empty and failed predictions.
    """
    from trainer.prelabel import prelabel

    return _run_job(lambda **context: prelabel(parse_project_id(project_id), task_ids, **context))


def relabel_project(project_id: str) -> dict[str, Any]:
    """Re-classify the unannotated tasks of a project from the stored detections with its served classifier.

    Job ``relabel-<project>``, enqueued when the served classifier changes (``trainer.relabel``).

    Returns:
        Counts: tasks seen, annotated (left alone), pushed, from the store, detected (store miss), failed.
    """
    from trainer.relabel import relabel

    return _run_job(lambda **context: relabel(parse_project_id(project_id), **context))


def _run_job(work: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Run a job's ``work(settings=, connection=, progress=)``; a failure is recorded in the job, and the job
    waits out a Redis outage before it ends either way, so RQ can record the outcome."""
    _ensure_logging()
    settings = get_settings()
    job = get_current_job()
    progress = Progress(job)
    connection = job.connection if job is not None else connect(settings.effective_redis_url, TOOL)
    try:
        return work(settings=settings, connection=connection, progress=progress)
    except TrainerError as exc:
        progress.fail(str(exc))
        raise
    except BaseException as exc:
        progress.fail(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        raise
    finally:
        _outlast_redis_outage(connection if job is not None else None)


def _outlast_redis_outage(connection: redis.Redis | None) -> None:
    """Wait (at most :data:`END_REDIS_WAIT_S`) until Redis answers, so RQ can record how the job ended.

    A job that ends while Redis is down would otherwise lose its outcome: RQ's work horse cannot save
    the result, the job stays "started" until its lease expires and is then reported failed (abandoned),
    even when it promoted a model. Waiting here is covered by the job's lease (the worker's heartbeat
    skips beats during the outage, ``trainer.worker``).
    """
    if connection is None:
        return  # run outside RQ (the CLI): nothing to record
    deadline = time.monotonic() + END_REDIS_WAIT_S
    warned = False
    while True:
        try:
            connection.ping()
            if warned:
                logger.info("Redis answers again: the job's outcome can be recorded")
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() > deadline:
                logger.error(
                    "Redis still unavailable after %.0f s: the job's outcome may be lost (%s)", END_REDIS_WAIT_S, exc
                )
                return
            if not warned:
                logger.warning("the job ended while Redis is unavailable (%s): waiting to record its outcome", exc)
                warned = True
            time.sleep(0.5)


def _ensure_logging() -> None:
    """``rq worker`` configures only its own logger; make the trainer's INFO lines visible too."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=get_settings().log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = get_settings()
    redaction.install(*settings.secrets)
