"""Box geometry of the training data: Label Studio rectangles to MegaDetector boxes, overlap, jitter.

Every box here is normalized ``(x_min, y_min, width, height)`` in [0, 1] (MegaDetector's format).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

BBox = tuple[float, float, float, float]


def ls_rectangle(
    value: Mapping[str, Any], original_width: float | None = None, original_height: float | None = None
) -> BBox | None:
    """A Label Studio rectangle (percent ``x, y, width, height``, ``rotation`` in degrees) as a box.

    A rotated rectangle (Label Studio turns it clockwise about its top-left corner) becomes its
    axis-aligned hull, computed in pixels when the result gives the image size. The box is clipped
    to the image; None when nothing of it is left (or a coordinate is missing).
    """
    try:
        x, y, w, h = (float(value[k]) / 100.0 for k in ("x", "y", "width", "height"))
        angle = math.radians(float(value.get("rotation") or 0.0))
    except (KeyError, TypeError, ValueError):
        return None
    if angle:
        sx = float(original_width or 1.0)
        sy = float(original_height or 1.0)
        px, py, pw, ph = x * sx, y * sy, w * sx, h * sy
        cos, sin = math.cos(angle), math.sin(angle)
        xs = [px, px + pw * cos, px - ph * sin, px + pw * cos - ph * sin]
        ys = [py, py + pw * sin, py + ph * cos, py + pw * sin + ph * cos]
        x, y = min(xs) / sx, min(ys) / sy
        w, h = (max(xs) - min(xs)) / sx, (max(ys) - min(ys)) / sy
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(1.0, x + w), min(1.0, y + h)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def iou(a: BBox, b: BBox) -> float:
    """Intersection over union of two boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def best_match(box: BBox, candidates: list[BBox], min_iou: float) -> BBox | None:
    """The candidate overlapping ``box`` most, if its IoU reaches ``min_iou``."""
    scored = [(iou(box, c), c) for c in candidates]
    best = max(scored, default=(0.0, None), key=lambda s: s[0])
    return best[1] if best[0] >= min_iou else None


def jitter_box(box: BBox, rng: random.Random, *, scale: tuple[float, float], shift: float) -> BBox:
    """``box`` rescaled about its centre by a factor drawn from ``scale`` and moved by up to ``shift``
    of its size, clipped to the image: the looseness of a detector's box around a human one."""
    x, y, w, h = box
    sw, sh = w * rng.uniform(*scale), h * rng.uniform(*scale)
    cx = x + w / 2 + rng.uniform(-shift, shift) * w
    cy = y + h / 2 + rng.uniform(-shift, shift) * h
    x0, y0 = max(0.0, cx - sw / 2), max(0.0, cy - sh / 2)
    x1, y1 = min(1.0, cx + sw / 2), min(1.0, cy + sh / 2)
    return (x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0))
