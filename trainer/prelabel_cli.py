"""``camtrap prelabel --project N [--missing-only]``: enqueue chunked pre-annotation of a project's tasks.

The task ids are read from Label Studio page by page and enqueued as jobs of ``PRELABEL_CHUNK_SIZE`` ids on
queue ``prelabel`` (``backend.contracts.label_jobs``); any number of ``camtrap worker`` processes run
them. ``--missing-only`` keeps the tasks with no prediction at all. A task that already has a prediction
of the served version is skipped by its job, so running the command twice posts nothing twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import redis

from backend.commands import Command
from backend.config import get_settings
from backend.contracts.label_jobs import enqueue_prelabel
from backend.contracts.projects import project_id
from backend.contracts.redis_client import TOOL, connect
from backend.errors import BackendError
from backend.labelstudio.client import LabelStudioClient

logger = logging.getLogger(__name__)

#: Tasks per page read from Label Studio.
PAGE_SIZE = 500


def add_prelabel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", required=True, help="Label Studio project id")
    parser.add_argument(
        "--missing-only", action="store_true", help="only tasks without any prediction (default: every task)"
    )


def run_prelabel(args: argparse.Namespace) -> int:
    """Enqueue the jobs and print ``{"project", "tasks", "jobs"}`` as JSON; 1 if LS or Redis fails."""
    settings = get_settings()
    project = project_id(args.project)
    try:
        with LabelStudioClient(settings) as client:
            ids = [
                int(task["id"])
                for task in client.iter_tasks(project, page_size=PAGE_SIZE)
                if not (args.missing_only and _has_predictions(task))
            ]
        jobs = enqueue_prelabel(connect(settings.effective_redis_url, TOOL), settings, project, ids, trigger="cli")
    except (BackendError, redis.RedisError) as exc:
        logger.error("project %s: pre-annotation not enqueued: %s", project, exc)
        return 1
    sys.stdout.write(json.dumps({"project": project, "tasks": len(ids), "jobs": jobs}) + "\n")
    return 0


def _has_predictions(task: dict) -> bool:
    if "total_predictions" in task:
        return int(task.get("total_predictions") or 0) > 0
    return bool(task.get("predictions"))


COMMANDS = [
    Command(
        "prelabel",
        "enqueue pre-annotation of a project's tasks, in chunks of PRELABEL_CHUNK_SIZE, for the RQ workers",
        add_prelabel_arguments,
        run_prelabel,
    )
]
