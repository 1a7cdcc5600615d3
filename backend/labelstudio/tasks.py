"""Reading Label Studio task objects: the image reference and the task id."""

from __future__ import annotations

from typing import Any

from backend.labelstudio.label_config import LabelMapping


def task_image(task: Any, mapping: LabelMapping) -> str:
    """The task's image reference (``data[<image key>]``), or ``""`` when it has none."""
    data = task.get("data") if isinstance(task, dict) else None
    value = data.get(mapping.image_key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def task_id(task: Any) -> int | None:
    """The task's integer id, or None."""
    value = task.get("id") if isinstance(task, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
