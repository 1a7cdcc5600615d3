"""Which bundle each project serves: the ``current.json`` pointer, its Redis mirror and announcements.

Promotion and rollback both go through :func:`set_current`: the pointer file is replaced atomically,
then the Redis mirror is set and ``{"project", "version"}`` is published on the models channel so
every backend process swaps without a restart. The file is the truth; Redis is a fast notification.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path

import redis

from backend.bundle import bundle_dir, project_dir, read_manifest
from backend.redis_keys import RedisKeys

logger = logging.getLogger(__name__)

CURRENT_FILE = "current.json"
NO_CLASSIFIER = "none"


def detector_id(detector_model: str) -> str:
    """A short, stable name for the detector: ``MDV5A`` -> ``md_v5a``, ``/x/tiny_md.pt`` -> ``md_tiny_md``."""
    name = Path(detector_model).stem if detector_model.endswith(".pt") else detector_model
    name = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if name.startswith("mdv"):
        name = "md_v" + name[3:]
    return name if name.startswith("md") else f"md_{name}"


def model_version(detector: str, classifier_version: str | None) -> str:
    """The one ``model_version`` string of a project, e.g. ``md_v5a+none`` or ``md_v5a+p3-2026...``."""
    return f"{detector}+{classifier_version or NO_CLASSIFIER}"


def read_current(models_dir: Path, project: str) -> str | None:
    """The project's promoted version from ``current.json``, or None when nothing was promoted."""
    path = project_dir(models_dir, project) / CURRENT_FILE
    try:
        return json.loads(path.read_text())["version"] or None
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, KeyError, TypeError):
        logger.error("ignoring unreadable pointer %s", path)
        return None


def write_current(models_dir: Path, project: str, version: str | None) -> None:
    """Replace ``current.json`` atomically (temp file, fsync, ``os.replace``)."""
    directory = project_dir(models_dir, project)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".current-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"version": version}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, directory / CURRENT_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def set_current(
    models_dir: Path, project: str, version: str, connection: redis.Redis | None, keys: RedisKeys
) -> None:
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


def projects(models_dir: Path) -> list[str]:
    """Projects that have a models directory."""
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
