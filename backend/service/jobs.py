"""Training jobs as the backend sees them: enqueue (one per project), inspect, cancel.

The backend never imports the trainer: jobs are enqueued by dotted name (:data:`TRAIN_FUNCTION`) on
queue ``training`` and run by an ``rq worker``. A project has at most one queued-or-running training
job, with id ``train-<project>`` (``redis_keys.training_job_id``): a trigger while one is active gets
that job's id back; a finished, failed, stopped or canceled one is deleted and replaced.

Before looking at a job, the queue's started-job registry is cleaned: a job whose worker died (its
heartbeat expired) is moved to ``failed`` by RQ's abandoned-job handling, so the next trigger trains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import DuplicateJobError, InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from backend.config import Settings
from backend.contracts.keys import PRELABEL_QUEUE, TRAINING_QUEUE, RedisKeys, training_job_id
from backend.contracts.label_jobs import job_lifetimes
from backend.redaction import redact

logger = logging.getLogger(__name__)

#: The RQ entry point of a training run (``trainer/jobs.py``), by name.
TRAIN_FUNCTION = "trainer.jobs.train_project"
#: States after which a job id may be reused.
TERMINAL = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED})
#: States from which a job is canceled without a worker's help.
WAITING = frozenset({JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.CREATED})
#: Attempts at replacing a finished job before giving the current one back.
ENQUEUE_ATTEMPTS = 3


@dataclass(frozen=True)
class EnqueueResult:
    """What a trigger got: the project's job and whether this trigger created it."""

    job_id: str
    status: str
    created: bool


def enqueue_training(
    connection: redis.Redis,
    settings: Settings,
    project: str,
    *,
    trigger: str,
    options: dict[str, Any] | None = None,
) -> EnqueueResult:
    """Enqueue a training job for ``project`` unless one is already queued or running.

    Args:
        connection: Redis (the request path's client, with short timeouts).
        settings: ``JOB_TIMEOUT_S``, ``JOB_FAILURE_TTL_S``, ``JOB_RESULT_TTL_S``, ``REDIS_PREFIX``.
        project: Project id.
        trigger: Why (``START_TRAINING``, ``POST /train``, ``auto``...), kept in the job's meta.
        options: TrainConfig overrides passed to the job (JSON-able).

    Raises:
        redis.RedisError: Redis is unavailable.
    """
    job_id = training_job_id(project)
    queue = Queue(TRAINING_QUEUE, connection=connection)
    clean_abandoned(connection)
    for _ in range(ENQUEUE_ATTEMPTS):
        existing = fetch_job(connection, job_id)
        if existing is not None:
            status = existing.get_status(refresh=False)
            if status not in TERMINAL:
                return EnqueueResult(job_id, str(status.value if status else "unknown"), created=False)
            if not _delete_if_terminal(connection, existing):
                continue
        try:
            queue.enqueue_call(
                TRAIN_FUNCTION,
                args=(project,),
                kwargs={"options": options} if options else None,
                job_id=job_id,
                unique=True,
                **job_lifetimes(settings),
                description=f"train the species classifier of project {project} ({trigger})",
                meta={"stage": "queued", "trigger": trigger, "project": project},
            )
        except DuplicateJobError:
            continue
        connection.set(RedisKeys(settings.redis_prefix).pending(project), 0)
        logger.info("enqueued %s (%s)", job_id, trigger)
        return EnqueueResult(job_id, JobStatus.QUEUED.value, created=True)
    current = fetch_job(connection, job_id)
    state = current.get_status(refresh=False) if current is not None else None
    return EnqueueResult(job_id, state.value if state else "unknown", created=False)


def fetch_job(connection: redis.Redis, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        return None


def clean_abandoned(connection: redis.Redis) -> None:
    """Let RQ fail (or retry) the jobs whose worker stopped heart-beating (killed, machine lost)."""
    for queue in (TRAINING_QUEUE, PRELABEL_QUEUE):
        StartedJobRegistry(queue, connection=connection).cleanup()


def job_info(connection: redis.Redis, job_id: str) -> dict[str, Any] | None:
    """Status, stage, progress and error of a job, for ``GET /jobs/{id}``; None if there is no such job."""
    clean_abandoned(connection)
    job = fetch_job(connection, job_id)
    if job is None:
        return None
    status = job.get_status(refresh=False)
    meta = dict(job.meta)
    info: dict[str, Any] = {
        "job": job.id,
        "status": status.value if status else "unknown",
        "stage": meta.get("stage"),
        "progress": meta,
        "error": None,
        "result": None,
        "enqueued_at": _iso(job.enqueued_at),
        "started_at": _iso(job.started_at),
        "ended_at": _iso(job.ended_at),
    }
    if status == JobStatus.FINISHED:
        info["result"] = job.return_value()
    elif status in (JobStatus.FAILED, JobStatus.STOPPED):
        error = meta.get("error") or _last_line(_failure_text(job)) or f"the job was {status.value}"
        info["error"] = redact(str(error))
    return info


def cancel_job(connection: redis.Redis, job_id: str) -> dict[str, Any] | None:
    """Cancel a waiting job, or ask its worker to stop a running one. None if there is no such job."""
    job = fetch_job(connection, job_id)
    if job is None:
        return None
    status = job.get_status(refresh=False)
    if status in WAITING:
        job.cancel()
        logger.info("canceled %s before it started", job_id)
    elif status == JobStatus.STARTED:
        try:
            send_stop_job_command(connection, job_id)
            logger.info("asked the worker to stop %s", job_id)
        except InvalidJobOperation:
            logger.info("%s is not executing any more", job_id)
    return job_info(connection, job_id)


def _delete_if_terminal(connection: redis.Redis, job: Job) -> bool:
    """Delete a finished job so its id can be reused; False if its state changed meanwhile."""
    with connection.pipeline() as pipe:
        try:
            pipe.watch(job.key)
            raw = pipe.hget(job.key, "status")
            if raw is None or JobStatus(raw.decode()) not in TERMINAL:  # type: ignore[attr-defined]
                return raw is None
            pipe.multi()
            job.delete(pipeline=pipe)
            pipe.execute()
            return True
        except redis.WatchError:
            return False


def _failure_text(job: Job) -> str | None:
    result = job.latest_result()
    return result.exc_string if result is not None else None


def _last_line(text: str | None) -> str | None:
    if not text:
        return None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
