"""Label jobs on queue ``prelabel``: pre-annotation chunks, and ``relabel-<project>`` after a promotion.

:func:`enqueue_prelabel` splits task ids into jobs of ``PRELABEL_CHUNK_SIZE`` (``TASKS_CREATED``,
``camtrap prelabel``). :func:`enqueue_relabel` runs when a project's served classifier changes (gate or
manual promotion, rollback): both the trainer (``trainer.publish``, after the gate promotes) and the service (``POST
/models/{version}/promote``) call :func:`enqueue_relabel`, so it lives below both. The job runs
``trainer.jobs.relabel_project`` on queue ``prelabel``; it is looked at through ``GET /jobs/relabel-<project>``
and canceled by ``DELETE``. A newer promotion supersedes an older re-label: a queued one is dropped, a
running one is told to stop (RQ's stop command) and the new one starts from the first task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TypedDict

import redis
from rq import Queue, Retry
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus

from backend.config import Settings
from backend.contracts.keys import PRELABEL_QUEUE, relabel_job_id

logger = logging.getLogger(__name__)

#: The RQ entry points, by name (the backend never imports the trainer).
PRELABEL_FUNCTION = "trainer.jobs.prelabel_tasks"
RELABEL_FUNCTION = "trainer.jobs.relabel_project"
#: Retries of a failed pre-annotation chunk before it is reported as failed.
PRELABEL_RETRIES = 2
#: How long a superseded running job gets to let go of its id, in seconds.
STOP_WAIT_S = 10.0
_WAITING = frozenset({JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.CREATED})


class JobLifetimes(TypedDict):
    """RQ's ``timeout``, ``result_ttl`` and ``failure_ttl`` keyword arguments, in seconds."""

    timeout: int
    result_ttl: int
    failure_ttl: int


def job_lifetimes(settings: Settings) -> JobLifetimes:
    """The lifetimes of every job we enqueue, from the settings (``JOB_TIMEOUT_S``, ``JOB_*_TTL_S``)."""
    return JobLifetimes(
        timeout=settings.job_timeout_s,
        result_ttl=settings.job_result_ttl_s,
        failure_ttl=settings.job_failure_ttl_s,
    )


def enqueue_prelabel(
    connection: redis.Redis, settings: Settings, project: str, task_ids: Sequence[int], *, trigger: str
) -> list[str]:
    """Split ``task_ids`` into chunks of ``PRELABEL_CHUNK_SIZE``, one job per chunk on queue ``prelabel``.

    Jobs carry ids only (the worker reads each task from Label Studio), so any number of workers share
    an import and a job stays small whatever the import's size. A failed chunk is retried
    (:data:`PRELABEL_RETRIES` times, RQ ``Retry``) and then stays in the failed registry, reported by
    ``GET /jobs/<id>``. Returns the job ids, in task order.

    Raises:
        redis.RedisError: Redis is unavailable.
    """
    ids = [int(t) for t in task_ids]
    size = settings.prelabel_chunk_size
    queue = Queue(PRELABEL_QUEUE, connection=connection)
    jobs = []
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        jobs.append(
            Queue.prepare_data(
                PRELABEL_FUNCTION,
                args=(project, chunk),
                **job_lifetimes(settings),
                description=f"pre-annotate tasks {chunk[0]}..{chunk[-1]} ({len(chunk)}) of project {project}",
                meta={"stage": "queued", "trigger": trigger, "project": project},
                retry=Retry(max=PRELABEL_RETRIES),
            )
        )
    enqueued = queue.enqueue_many(jobs) if jobs else []
    logger.info("enqueued %d pre-annotation job(s) for %d task(s) of project %s", len(enqueued), len(ids), project)
    return [job.id for job in enqueued]


def enqueue_relabel(connection: redis.Redis, settings: Settings, project: str, *, trigger: str) -> str:
    """Enqueue ``relabel-<project>``, superseding a queued or running one; returns the job id.

    Raises:
        redis.RedisError: Redis is unavailable.
    """
    job_id = relabel_job_id(project)
    try:
        existing: Job | None = Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        existing = None
    if existing is not None:
        status = existing.get_status(refresh=True)
        if status == JobStatus.STARTED:
            try:
                send_stop_job_command(connection, job_id)
                logger.info("%s superseded: asked its worker to stop it", job_id)
            except InvalidJobOperation:
                pass
            _wait_not_started(existing)
        elif status in _WAITING:
            existing.cancel()
        existing.delete()
    Queue(PRELABEL_QUEUE, connection=connection).enqueue_call(
        RELABEL_FUNCTION,
        args=(project,),
        job_id=job_id,
        **job_lifetimes(settings),
        description=f"re-label the unannotated tasks of project {project} ({trigger})",
        meta={"stage": "queued", "trigger": trigger, "project": project},
    )
    logger.info("enqueued %s (%s)", job_id, trigger)
    return job_id


def _wait_not_started(job: Job) -> None:
    """Wait until a stopped job's worker let it go, so its id is reused without a race."""
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline and job.get_status(refresh=True) == JobStatus.STARTED:
        time.sleep(0.05)
