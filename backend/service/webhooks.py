"""What each Label Studio webhook action does (``POST /webhook``), in a few Redis calls.

==========================  ================================================================
action                      effect
==========================  ================================================================
START_TRAINING              enqueue a training job (or return the active one)
ANNOTATION_CREATED/UPDATED  ``pending += 1`` (cancelled skips do not count); at the project's
ANNOTATIONS_CREATED         threshold (``train_every_n_annotations`` in extra_params, else
                            ``TRAIN_EVERY_N_ANNOTATIONS``; 0 = off) enqueue a training job
ANNOTATIONS_DELETED         ``pending -= len(ids)``, never below 0 (they will not be learnt)
PROJECT_UPDATED             store the new label config in the project's set-up hash
TASKS_CREATED               enqueue bulk pre-annotation on queue ``prelabel`` (``PRELABEL_ON_IMPORT``):
                            one job per ``PRELABEL_CHUNK_SIZE`` task ids
others                      accepted and ignored
==========================  ================================================================

Label Studio waits 1 s for a webhook and never retries, so :func:`handle_within` answers within
:data:`DEADLINE_S` whatever Redis does: a slow Redis gets "accepted, still being handled" while the
work finishes in its thread; a Redis that is down gets a body (and a log line) saying the event was
not recorded. Nothing is kept in memory, so the next event works as soon as Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import redis

from backend.config import Settings
from backend.contracts.keys import RedisKeys
from backend.contracts.label_jobs import enqueue_prelabel
from backend.contracts.projects import project_id
from backend.contracts.setup_record import SetupRecord
from backend.errors import InvalidProjectError
from backend.labelstudio.events import COUNTED_EVENTS, LSEvent
from backend.service.jobs import enqueue_training

logger = logging.getLogger(__name__)

#: The webhook answers within this many seconds (LS gives 1 s; we promise 0.1 s).
DEADLINE_S = 0.05

#: Lua: decrement, but never below zero; returns the new value.
_DECREMENT_FLOOR_ZERO = """
local value = redis.call('DECRBY', KEYS[1], ARGV[1])
if value < 0 then
    redis.call('SET', KEYS[1], 0)
    value = 0
end
return value
"""


class Outcome(StrEnum):
    """What happened to one webhook delivery."""

    QUEUED = "queued"
    ALREADY_QUEUED = "already_queued"
    COUNTED = "counted"
    STORED = "stored"
    IGNORED = "ignored"
    ACCEPTED = "accepted"
    REDIS_UNAVAILABLE = "redis_unavailable"


@dataclass(frozen=True)
class WebhookResult:
    """The JSON body of the webhook's answer (``job`` set when a training job is involved)."""

    status: Outcome
    action: str
    project: str | None = None
    job: str | None = None
    job_status: str | None = None
    pending: int | None = None
    threshold: int | None = None
    detail: str = ""

    def body(self) -> dict[str, Any]:
        return {k: (v.value if isinstance(v, StrEnum) else v) for k, v in asdict(self).items() if v not in (None, "")}


async def handle_within(payload: dict[str, Any], connection: redis.Redis, settings: Settings) -> WebhookResult:
    """Run :func:`handle_event` in a thread and answer after at most :data:`DEADLINE_S` seconds."""
    action = str(payload.get("action", ""))
    try:
        return await asyncio.wait_for(asyncio.to_thread(handle_event, payload, connection, settings), DEADLINE_S)
    except TimeoutError:
        logger.warning("webhook %s: Redis is slow; answered before the event was handled", action)
        return WebhookResult(Outcome.ACCEPTED, action, detail="Redis is slow: the event is still being handled")


def handle_event(payload: dict[str, Any], connection: redis.Redis, settings: Settings) -> WebhookResult:
    """Apply one webhook delivery; Redis errors become a ``redis_unavailable`` result, never an exception."""
    action = str(payload.get("action", ""))
    event = LSEvent.parse(action)
    if event is None or event == LSEvent.TASKS_DELETED:
        return WebhookResult(Outcome.IGNORED, action, detail="no training effect")
    if event == LSEvent.TASKS_CREATED and not (settings.prelabel_on_import and payload.get("tasks")):
        return WebhookResult(Outcome.IGNORED, action, detail="bulk pre-annotation is off or there are no tasks")
    try:
        project = project_id(payload.get("project"))
    except InvalidProjectError as exc:
        return WebhookResult(Outcome.IGNORED, action, detail=str(exc))
    try:
        return _dispatch(event, payload, project, connection, settings)
    except redis.RedisError as exc:
        logger.error("webhook %s for project %s not recorded: Redis is unavailable (%s)", action, project, exc)
        return WebhookResult(
            Outcome.REDIS_UNAVAILABLE, action, project, detail=f"event not recorded: Redis is unavailable ({exc})"
        )


def _dispatch(
    event: LSEvent, payload: dict[str, Any], project: str, connection: redis.Redis, settings: Settings
) -> WebhookResult:
    keys = RedisKeys(settings.redis_prefix)
    if event == LSEvent.START_TRAINING:
        return _train(event, project, connection, settings, trigger=event.value)
    if event in COUNTED_EVENTS:
        return _count(event, payload, project, connection, settings, keys)
    if event == LSEvent.ANNOTATIONS_DELETED:
        deleted = len(payload.get("annotations") or [])
        pending = int(connection.eval(_DECREMENT_FLOOR_ZERO, 1, keys.pending(project), deleted))
        return WebhookResult(Outcome.COUNTED, event.value, project, pending=pending)
    if event == LSEvent.TASKS_CREATED:
        ids = [t["id"] for t in payload.get("tasks") or [] if isinstance(t, dict) and "id" in t]
        jobs = enqueue_prelabel(connection, settings, project, ids, trigger=event.value)
        return WebhookResult(
            Outcome.QUEUED,
            event.value,
            project,
            jobs[0] if jobs else None,
            "queued",
            detail=f"bulk pre-annotation: {len(ids)} task(s) in {len(jobs)} job(s)",
        )
    if event == LSEvent.PROJECT_UPDATED:
        body = payload.get("project")
        config = body.get("label_config") if isinstance(body, dict) else None
        if not config:
            return WebhookResult(Outcome.IGNORED, event.value, project, detail="no label_config in the payload")
        SetupRecord.save_schema(connection, keys, project, config)
        return WebhookResult(Outcome.STORED, event.value, project, detail="label config stored")
    return WebhookResult(Outcome.IGNORED, event.value, project)


def _count(
    event: LSEvent,
    payload: dict[str, Any],
    project: str,
    connection: redis.Redis,
    settings: Settings,
    keys: RedisKeys,
) -> WebhookResult:
    annotations = payload.get("annotation")
    annotations = annotations if isinstance(annotations, list) else [annotations or {}]
    counted = sum(1 for a in annotations if not (isinstance(a, dict) and a.get("was_cancelled")))
    pending = connection.incrby(keys.pending(project), counted)
    record = SetupRecord.load(connection, keys, project) or SetupRecord()
    threshold = record.train_every(settings.train_every_n_annotations)
    if threshold > 0 and int(pending) >= threshold:
        result = _train(event, project, connection, settings, trigger=f"auto: {pending} annotations")
        return WebhookResult(
            result.status, event.value, project, result.job, result.job_status, int(pending), threshold
        )
    return WebhookResult(Outcome.COUNTED, event.value, project, pending=int(pending), threshold=threshold)


def _train(event: LSEvent, project: str, connection: redis.Redis, settings: Settings, *, trigger: str) -> WebhookResult:
    enqueued = enqueue_training(connection, settings, project, trigger=trigger)
    status = Outcome.QUEUED if enqueued.created else Outcome.ALREADY_QUEUED
    return WebhookResult(status, event.value, project, enqueued.job_id, enqueued.status)
