"""Observations of a labelled project, one per box (or per image), from people or from the model, and their CSV.

The common shape ``camtrap export`` writes to every format (CSV here, COCO Camera Traps in
:mod:`backend.formats.coco`, Camtrap DP in :mod:`backend.formats.camtrapdp`). ``source`` says who said it:
``human`` (an annotation in Label Studio) or ``model`` (a stored prediction of the served model, with its
``model_version`` and score).

CSV columns, in order (:data:`CSV_COLUMNS`): ``task_id, image, location, datetime, source, label, x, y,
width, height, score, model_version, annotation_id``; the box is MegaDetector's normalised
``[x, y, width, height]`` (empty for an image-level label), ``label`` is ``empty`` for an empty image.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from backend.formats.atomic import write_text_atomically

HUMAN = "human"
MODEL = "model"
#: The label of an image people (or the model) found empty.
EMPTY_LABEL = "empty"

CSV_COLUMNS = (
    "task_id",
    "image",
    "location",
    "datetime",
    "source",
    "label",
    "x",
    "y",
    "width",
    "height",
    "score",
    "model_version",
    "annotation_id",
)


@dataclass(frozen=True)
class MediaItem:
    """One photo (one Label Studio task)."""

    task_id: int
    image: str
    """The task's image reference, as Label Studio stores it."""
    location: str | None = None
    datetime: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Observation:
    """One label of one photo."""

    media: MediaItem
    source: str
    """``human`` or ``model``."""
    label: str
    bbox: tuple[float, float, float, float] | None = None
    score: float | None = None
    model_version: str | None = None
    annotation_id: str | None = None
    """The Label Studio annotation or prediction id it comes from."""


def write_observations_csv(path: Path, observations: Iterable[Observation]) -> Path:
    """Write :data:`CSV_COLUMNS` rows atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for o in observations:
        box = [f"{v:.4f}" for v in o.bbox] if o.bbox else ["", "", "", ""]
        writer.writerow(
            [
                o.media.task_id,
                o.media.image,
                o.media.location or "",
                o.media.datetime or "",
                o.source,
                o.label,
                *box,
                "" if o.score is None else f"{o.score:.4f}",
                o.model_version or "",
                o.annotation_id or "",
            ]
        )
    return write_text_atomically(path, buffer.getvalue())
