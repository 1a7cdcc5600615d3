"""The RQ worker for queues ``training`` and ``prelabel``.

Equivalent to ``rq worker training prelabel --url $REDIS_URL`` run from the repository root (which
also works), plus two things: the training code is imported once in the parent so each forked job
starts at once, and the worker class can be chosen.

Worker classes: ``fork`` (RQ's default ``Worker``) runs each job in a forked work horse, so a job's
memory is returned after it and a hung job can be killed. It is CUDA-safe because the parent never
initializes CUDA (importing torch does not; only the horse touches the GPU). ``spawn`` starts a fresh
interpreter per job (for platforms without ``fork``), ``simple`` runs jobs in the worker process itself
(debugging only: no isolation, and a job timeout cannot interrupt native code).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from enum import StrEnum

from rq import Queue
from rq.worker import SimpleWorker, SpawnWorker, Worker

from backend.config import Settings
from backend.contracts.keys import PRELABEL_QUEUE, TRAINING_QUEUE
from backend.contracts.redis_client import WORKER, connect

logger = logging.getLogger(__name__)

DEFAULT_QUEUES = (TRAINING_QUEUE, PRELABEL_QUEUE)
#: Modules imported in the parent before forking (torch, torchvision, the pipeline).
PRELOAD = ("trainer.jobs",)


class WorkerClass(StrEnum):
    FORK = "fork"
    SPAWN = "spawn"
    SIMPLE = "simple"


_CLASSES: dict[WorkerClass, type[Worker] | type[SimpleWorker]] = {
    WorkerClass.FORK: Worker,
    WorkerClass.SPAWN: SpawnWorker,
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
    worker = _CLASSES[WorkerClass(worker_class)](
        [Queue(q, connection=connection) for q in queues], connection=connection, name=name
    )
    logger.info("worker %s (%s) on %s at %s", worker.name, worker_class, list(queues), settings.effective_redis_url)
    return worker.work(burst=burst, logging_level=settings.log_level)
