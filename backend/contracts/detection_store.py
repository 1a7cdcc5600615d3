"""The detection store: MegaDetector results kept per image content, shared by every process.

One JSON file per (image sha256, detector id, inference size) under ``DATA_DIR/detections``::

    DATA_DIR/detections/<detector key>/<sha256[:2]>/<sha256>.json

``<detector key>`` is the detector id (``md_v5a.0.0``, ``mdlite+yolox_tiny_640_20220528``) with the
inference size appended (``@1280``; ``@native`` for the model's own). The entry holds MegaDetector's
per-image fields: ``detections`` (``category``, ``conf``, ``bbox`` normalised ``[x, y, w, h]``), the
lowest confidence the detector kept (``threshold``), and the image's ``width``/``height`` when known.

Writes are atomic (temporary file in the same directory, then ``os.replace``), so a reader sees the
old entry or the new one, never half of one; a file that does not parse or has the wrong shape is
ignored (a miss: the caller recomputes and overwrites it), never served. The store has no index:
the path is the index, so any process that mounts ``DATA_DIR`` shares it, with no Redis round trip.
Retention: entries are small (~100 bytes per box) and never expire; delete a detector's folder to
drop its results (docs/contracts.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Folder under DATA_DIR.
STORE_DIRNAME = "detections"
_CATEGORIES = {"1", "2", "3"}


def content_key(image_bytes: bytes) -> str:
    """The store key of an image: the sha256 of its bytes (hex)."""
    return hashlib.sha256(image_bytes).hexdigest()


def detector_key(detector_id: str, image_size: int | None) -> str:
    """The folder name for one detector at one inference size."""
    safe = "".join(c if c.isalnum() or c in "._+-" else "_" for c in detector_id)
    return f"{safe}@{image_size if image_size else 'native'}"


@dataclass(frozen=True)
class StoredImage:
    """One image's stored detections (MegaDetector dicts, highest confidence first)."""

    detections: list[dict[str, Any]]
    threshold: float
    width: int | None = None
    height: int | None = None


class DetectionStore:
    """Read and write stored detections under ``root`` (``DATA_DIR/detections``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def under(cls, data_dir: Path) -> DetectionStore:
        return cls(Path(data_dir) / STORE_DIRNAME)

    def path(self, key: str, detector: str) -> Path:
        """The entry file of image ``key`` for ``detector`` (a :func:`detector_key`)."""
        return self.root / detector / key[:2] / f"{key}.json"

    def get(self, key: str, detector: str, threshold: float | None = None) -> StoredImage | None:
        """The stored entry, or None when missing, corrupt, or kept above ``threshold``.

        An entry computed with a higher cut-off than ``threshold`` lacks the boxes in between, so it
        does not answer a request for a lower one (a miss; the caller recomputes).
        """
        path = self.path(key, detector)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            entry = _parse(raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            logger.warning("ignoring corrupt detection store entry %s (%s); it will be recomputed", path, exc)
            return None
        if threshold is not None and entry.threshold > threshold + 1e-9:
            return None
        if threshold is None:
            return entry
        return StoredImage(
            [d for d in entry.detections if d["conf"] >= threshold], entry.threshold, entry.width, entry.height
        )

    def put(self, key: str, detector: str, entry: StoredImage) -> Path:
        """Write an entry atomically (replacing any old one). Raises OSError (disk full...) to the caller."""
        _parse(_dump(entry))  # refuse to write what could not be read back
        path = self.path(key, detector)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(_dump(entry), handle, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def count(self, detector: str) -> int:
        """How many images are stored for ``detector`` (a writer's ``.tmp-*.json`` is not an entry)."""
        return sum(1 for path in (self.root / detector).glob("??/*.json") if not path.name.startswith("."))


def _dump(entry: StoredImage) -> dict[str, Any]:
    out: dict[str, Any] = {"detections": entry.detections, "threshold": entry.threshold}
    if entry.width is not None and entry.height is not None:
        out["width"], out["height"] = entry.width, entry.height
    return out


def _parse(raw: Any) -> StoredImage:
    if not isinstance(raw, dict):
        raise ValueError("entry is not an object")
    detections: list[dict[str, Any]] = []
    for d in raw["detections"]:
        category, conf, bbox = str(d["category"]), float(d["conf"]), [float(v) for v in d["bbox"]]
        if category not in _CATEGORIES or len(bbox) != 4 or not 0.0 <= conf <= 1.0:
            raise ValueError(f"bad detection {d!r}")
        detections.append({"category": category, "conf": conf, "bbox": bbox})
    detections.sort(key=lambda d: d["conf"], reverse=True)
    width, height = raw.get("width"), raw.get("height")
    return StoredImage(
        detections,
        float(raw["threshold"]),
        int(width) if width is not None else None,
        int(height) if height is not None else None,
    )
