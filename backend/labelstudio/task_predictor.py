"""Label Studio tasks -> predictions: fetch each task's image through Label Studio, run the pipeline,
format the result. Used by ``/predict`` and by the pre-annotation job alike.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.label_config import LabelMapping
from backend.labelstudio.predictions import empty_prediction, ls_prediction
from backend.labelstudio.tasks import task_id, task_image
from backend.vision.classifier import SpeciesClassifier
from backend.vision.pipeline import Box, Pipeline
from backend.vision.thresholds import Thresholds

logger = logging.getLogger(__name__)


@dataclass
class TaskPredictions:
    """One prediction per task, in order, and what happened (``predicted`` / ``failed`` counts, boxes)."""

    predictions: list[dict[str, Any]]
    outcomes: Counter[str] = field(default_factory=Counter)
    shown_boxes: list[Box] = field(default_factory=list)


def predict_tasks(
    pipeline: Pipeline,
    client: LabelStudioClient,
    tasks: Sequence[dict[str, Any]],
    mapping: LabelMapping,
    classifier: SpeciesClassifier | None,
    model_version: str,
    thresholds: Thresholds,
    *,
    context: str = "",
) -> TaskPredictions:
    """One Label Studio prediction per task, in order; a task whose image fails gets an empty prediction.

    Args:
        pipeline: The process's detection pipeline.
        client: Downloads the task images from Label Studio.
        tasks: Task objects with ``id`` and ``data``.
        mapping: The project's labeling config, read by ``parse_label_config``.
        classifier: The project's served classifier, or None for boxes only.
        model_version: Stamped on every prediction.
        thresholds: The project's thresholds.
        context: Prefix of log lines (e.g. ``project 7``).
    """
    names = [f"task {task.get('id')}" for task in tasks]
    sources = [functools.partial(client.fetch_image, task_image(task, mapping), task_id(task)) for task in tasks]
    results = pipeline.run(names, sources, classifier, thresholds)
    out = TaskPredictions(predictions=[])
    for task, result in zip(tasks, results, strict=True):
        if result.boxes is None:
            logger.warning("%s, task %s: no prediction: %s", context or "predict", task.get("id"), result.failure)
            out.outcomes["failed"] += 1
            out.predictions.append(empty_prediction(model_version))
            continue
        out.outcomes["predicted"] += 1
        out.predictions.append(ls_prediction(result.boxes, mapping, *result.size, model_version, thresholds))
        out.shown_boxes += [b for b in result.boxes if b.detection.conf >= thresholds.show]
    return out
