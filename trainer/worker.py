"""The RQ worker for queues ``training`` and ``prelabel``.

Equivalent to ``rq worker training prelabel --url $REDIS_URL`` run from the repository root (which
also works), plus two things: the training code is imported once in the parent so each forked job
starts at once, and the worker class can be chosen.

Worker classes: ``fork`` (RQ's default ``Worker``) runs each job in a forked work horse, so a job's
memory is returned after it and a hung job can be killed. It is CUDA-safe because the parent never
initializes CUDA (importing torch does not; only the horse touches the GPU). ``spawn`` starts a fresh
interpreter per job (for platforms without ``fork``), ``simple`` runs jobs in the worker process itself
(debugging only: no isolation, and a job timeout cannot interrupt native code).

Redis outages: plain RQ quits when Redis vanishes while a job runs (its heartbeat meets a dead Redis and
``work()`` ends on "found an unhandled exception, quitting"), leaving the job's work horse training with
nobody above it. Here the heartbeat of a running job skips a beat instead (:class:`OutageTolerant`), and
if the worker still loses Redis (at the end of a job, in its own bookkeeping) :func:`run_worker` waits for
Redis to answer again and starts a new worker in the same process, so ``camtrap worker`` outlives a Redis
restart without a supervisor (compose's ``restart:`` still covers a crash of the process itself).
"""

from __future__ import annotations

import importlib
import itertools
import logging
import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import redis
from rq import Queue
from rq.worker import SimpleWorker, SpawnWorker, Worker

from backend.config import Settings
from backend.contracts.keys import PRELABEL_QUEUE, TRAINING_QUEUE
from backend.contracts.redis_client import WORKER, answers, connect

logger = logging.getLogger(__name__)

DEFAULT_QUEUES = (TRAINING_QUEUE, PRELABEL_QUEUE)
#: Modules imported in the parent before forking (torch, torchvision, the pipeline).
PRELOAD = ("trainer.jobs",)


class WorkerClass(StrEnum):
    FORK = "fork"
    SPAWN = "spawn"
    SIMPLE = "simple"


#: Seconds between checks whether Redis answers again after the worker lost it.
REDIS_WAIT_S = 1.0


class OutageTolerant(Worker):
    """RQ's forking worker whose heartbeats while a job runs survive a Redis outage.

    The heartbeat goes out every ``job_monitoring_interval`` seconds (and the job's lease lasts 60 s
    longer), so a skipped one is harmless while Redis is back within about a minute; the work horse goes
    on meanwhile, and its progress reports wait for Redis too (``trainer.progress``).
    """

    def maintain_heartbeats(self, job: Any, execution: Any) -> None:
        try:
            super().maintain_heartbeats(job, execution)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.log.warning("Worker %s: heartbeat skipped, Redis is unavailable (%s); job goes on", self.name, exc)


class OutageTolerantSpawn(OutageTolerant, SpawnWorker):
    """:class:`OutageTolerant` with a fresh interpreter per job."""


_CLASSES: dict[WorkerClass, type[Worker] | type[SimpleWorker]] = {
    WorkerClass.FORK: OutageTolerant,
    WorkerClass.SPAWN: OutageTolerantSpawn,
    WorkerClass.SIMPLE: SimpleWorker,
}


def run_worker(
    settings: Settings,
    *,
    queues: Sequence[str] = DEFAULT_QUEUES,
    worker_class: WorkerClass = WorkerClass.FORK,
    burst: bool = False,
    name: str | None = None,
    preload: bool = True,
) -> bool:
    """Work on ``queues`` until stopped (or until they are empty with ``burst``).

    Args:
        settings: ``REDIS_URL`` and ``LOG_LEVEL`` come from here.
        queues: Queue names, highest priority first.
        worker_class: How jobs are isolated (see the module docstring).
        burst: Quit when the queues are empty.
        name: Worker name (default: RQ's random one).
        preload: Import the training code before the first job.

    Returns:
        Whether any job was executed (RQ's ``work()`` result).
    """
    connection = connect(settings.effective_redis_url, WORKER)
    if preload:
        for module in PRELOAD:
            importlib.import_module(module)
    worked = False
    for restart in itertools.count():
        # A restarted worker gets a new name: the old one may still be registered (its death went unrecorded).
        worker = _CLASSES[WorkerClass(worker_class)](
            [Queue(q, connection=connection) for q in queues],
            connection=connection,
            name=f"{name}-{restart}" if name and restart else name,
        )
        logger.info("worker %s (%s) on %s at %s", worker.name, worker_class, list(queues), settings.effective_redis_url)
        try:
            worked = worker.work(burst=burst, logging_level=settings.log_level) or worked
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            logger.error("worker %s lost Redis (%s)", worker.name, exc)
        if burst or worker._shutdown_requested_date is not None:
            return worked  # stopped on purpose: a signal, or the queues are empty
        # RQ's work() ends on its own only when it gave up (Redis lost, an unhandled error): start again.
        logger.error("worker %s quit without being asked to; starting a new worker", worker.name)
        time.sleep(REDIS_WAIT_S)
        _wait_for_redis(settings.effective_redis_url)
    raise AssertionError("unreachable")  # itertools.count() never ends


def _wait_for_redis(url: str) -> None:
    """Block until Redis answers, logging once a minute."""
    if answers(url):
        return
    logger.error("Redis at %s is unavailable: waiting for it, then working again", url)
    waited = 0.0
    while not answers(url):
        time.sleep(REDIS_WAIT_S)
        waited += REDIS_WAIT_S
        if waited % 60 < REDIS_WAIT_S:
            logger.error("Redis at %s still unavailable after %.0f s", url, waited)
    logger.info("Redis at %s answers again: starting a new worker", url)
