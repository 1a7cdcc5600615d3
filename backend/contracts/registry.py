"""Which bundle each project serves (the ``current.json`` pointer) and the ``model_version`` string.

The pointer file is the truth; moving it (promotion, rollback) goes through
``backend.contracts.promotion.set_current``, which also announces it over Redis. No Redis here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path

from backend.contracts.bundle import project_dir

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


def projects(models_dir: Path) -> list[str]:
    """Projects that have a models directory."""
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
