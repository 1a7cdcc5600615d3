"""THE crop and eval transform shared by inference and training.

What the classifier saw in training is what it sees in production: the trainer crops its dataset
with :func:`crop_square` and evaluates with :func:`eval_transform`, exactly as the runtime does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from backend.contracts.bundle import Preprocessing


def square_crop_region(bbox: Sequence[float], width: int, height: int) -> tuple[int, int, int, int, int] | None:
    """The square MegaDetector's classification pipeline crops around a normalized box.

    The square's side is the box's longer side. It is shifted to stay inside the image where the
    image is large enough; where it is not, the crop is later zero-padded to the square.

    Args:
        bbox: ``[x_min, y_min, width, height]`` normalized to [0, 1] (MegaDetector format).
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        ``(left, top, right, bottom, side)`` in pixels, or None for a box of zero size.
    """
    x, y, w, h = (float(v) for v in bbox)
    box_left, box_top = int(x * width), int(y * height)
    box_w, box_h = int(w * width), int(h * height)
    if box_w <= 0 or box_h <= 0:
        return None
    side = max(box_w, box_h)
    left = _shift_into(box_left - (side - box_w) // 2, box_w, width)
    top = _shift_into(box_top - (side - box_h) // 2, box_h, height)
    crop_w, crop_h = min(width, side), min(height, side)
    return left, top, left + crop_w, top + crop_h, side


def _shift_into(start: int, box_size: int, limit: int) -> int:
    return max(0, min(start, limit - box_size))


def crop_square(image: Image.Image, bbox: Sequence[float]) -> Image.Image | None:
    """Crop the square around ``bbox`` (normalized ``[x, y, w, h]``), zero-padded where needed.

    Returns:
        An RGB image of ``side x side`` pixels, or None when the box has no area.
    """
    region = square_crop_region(bbox, image.width, image.height)
    if region is None:
        return None
    left, top, right, bottom, side = region
    crop = image.convert("RGB").crop((left, top, right, bottom))
    if crop.size == (side, side):
        return crop
    # MegaDetector's own padding (classification/crop_detections.py save_crop), so that the same box gives
    # the same pixels: centred with Python's round(), and scaled up when the image is smaller than the square
    return ImageOps.pad(crop, size=(side, side), color=0)


def eval_transform(preprocessing: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """The classifier's input pipeline for a square crop: resize, to tensor, normalize."""
    size = preprocessing.input_size
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((size, size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std)),
        ]
    )
