"""Promotion and rollback: move a project's pointer and tell every backend process.

:func:`set_current` is the only way the served version changes (the trainer's gate, and
``POST /models/{version}/promote`` for rollback or roll forward): the pointer file is replaced
atomically, then the Redis mirror is set and ``{"project", "version"}`` is published on the models
channel, so every backend process swaps without a restart. The file is the truth; Redis is a fast
notification (backends also re-read the pointer periodically).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import redis

from backend.contracts.bundle import bundle_dir, read_manifest
from backend.contracts.keys import RedisKeys
from backend.contracts.registry import NO_CLASSIFIER, write_current

logger = logging.getLogger(__name__)


def set_current(models_dir: Path, project: str, version: str, connection: redis.Redis | None, keys: RedisKeys) -> None:
    """Point the project at ``version`` (promotion or rollback) and announce it.

    ``version`` ``"none"`` (:data:`NO_CLASSIFIER`) rolls back to the detector alone.

    Raises:
        BundleError: ``version`` is not a complete bundle of this project.
    """
    served: str | None = None if version == NO_CLASSIFIER else version
    if served is not None:
        read_manifest(bundle_dir(models_dir, project, served))
    write_current(models_dir, project, served)
    logger.info("project %s now serves classifier %s", project, served or NO_CLASSIFIER)
    if connection is not None:
        announce(connection, keys, project, served)


def announce(connection: redis.Redis, keys: RedisKeys, project: str, version: str | None) -> None:
    """Mirror the pointer in Redis and publish it; a Redis failure is logged, not raised
    (backends also re-read the pointer file periodically)."""
    try:
        pipe = connection.pipeline()
        pipe.set(keys.current(project), version or "")
        pipe.publish(keys.models_channel, json.dumps({"project": str(project), "version": version}))
        pipe.execute()
    except redis.RedisError as exc:
        logger.error("could not announce version %s of project %s: %s", version, project, exc)
