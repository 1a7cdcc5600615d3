"""THE crop and resize chain shared by inference, training and the promotion gate.

What the classifier saw in training is what it sees in production. A bundle names its crop rule in
``preprocessing.crop``; the rule fixes both the square cut around a box and the resize chain that
turns the square into the network's input:

``square`` (bundles written before ``square_shifted``; still read as they were trained)
    The tightest square around the box, shifted inside the image by the *box's* size, so a box at the
    right or bottom edge gets up to a third of black padding; resized to the input in one step.
``square_shifted`` (every new bundle)
    The same square, shifted inside the image by *its own side*, so it is padded only where the image
    has no pixels (an image smaller than the square). Then :func:`shrink_crop` (Pillow, a fixed filter)
    down to :data:`CROP_STORE_FACTOR` times the input size, then the tensor resize: the trainer stores
    its crops after the first step and feeds them to the second, serving runs both, so the network gets
    the same pixels at every crop size.

:func:`crop_rule` refuses a rule this version does not know.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from backend.contracts.bundle import Preprocessing
from backend.errors import BundleError

#: The original rule: the square shifted by the box's size (kept for the bundles that use it).
SQUARE = "square"
#: The square shifted into the image by its own side, with the two-step resize chain.
SQUARE_SHIFTED = "square_shifted"
#: Every crop rule this version reads.
CROP_RULES = (SQUARE, SQUARE_SHIFTED)
#: ``square_shifted`` crops are first shrunk to at most this many times the input size (on each side).
CROP_STORE_FACTOR = 2

#: ``(image, normalized [x, y, w, h]) -> square crop or None``.
CropFn = Callable[[Image.Image, Sequence[float]], Image.Image | None]


def square_crop_region(
    bbox: Sequence[float], width: int, height: int, rule: str = SQUARE_SHIFTED
) -> tuple[int, int, int, int, int] | None:
    """The square MegaDetector's classification pipeline crops around a normalized box.

    The square's side is the box's longer side, centred on the box, then shifted to stay inside the
    image (see the module docstring for how each rule shifts). Where the image is smaller than the
    square, the crop is later zero-padded to the square.

    Args:
        bbox: ``[x_min, y_min, width, height]`` normalized to [0, 1] (MegaDetector format).
        width: Image width in pixels.
        height: Image height in pixels.
        rule: :data:`SQUARE_SHIFTED` (default) or :data:`SQUARE`.

    Returns:
        ``(left, top, right, bottom, side)`` in pixels, or None for a box of zero size.
    """
    x, y, w, h = (float(v) for v in bbox)
    box_left, box_top = int(x * width), int(y * height)
    box_w, box_h = int(w * width), int(h * height)
    if box_w <= 0 or box_h <= 0:
        return None
    side = max(box_w, box_h)
    if rule == SQUARE:
        left = _shift_into(box_left - (side - box_w) // 2, box_w, width)
        top = _shift_into(box_top - (side - box_h) // 2, box_h, height)
    else:
        left = _shift_into(box_left - (side - box_w) // 2, min(side, width), width)
        top = _shift_into(box_top - (side - box_h) // 2, min(side, height), height)
    crop_w, crop_h = min(width, side), min(height, side)
    return left, top, left + crop_w, top + crop_h, side


def _shift_into(start: int, size: int, limit: int) -> int:
    return max(0, min(start, limit - size))


def crop_square(image: Image.Image, bbox: Sequence[float], rule: str = SQUARE_SHIFTED) -> Image.Image | None:
    """Crop the square around ``bbox`` (normalized ``[x, y, w, h]``), zero-padded where needed.

    Returns:
        An RGB image of ``side x side`` pixels, or None when the box has no area.
    """
    region = square_crop_region(bbox, image.width, image.height, rule)
    if region is None:
        return None
    left, top, right, bottom, side = region
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert() copies even an RGB image whole
    crop = rgb.crop((left, top, right, bottom))
    if crop.size == (side, side):
        return crop
    # MegaDetector's own padding (classification/crop_detections.py save_crop), so that the same box gives
    # the same pixels: centred with Python's round(), and scaled up when the image is smaller than the square
    return ImageOps.pad(crop, size=(side, side), color=0)


def crop_rule(rule: str) -> CropFn:
    """The crop function of a bundle's ``preprocessing.crop``.

    Raises:
        BundleError: the rule is not one this version knows.
    """
    if rule not in CROP_RULES:
        raise BundleError(
            f"unknown crop rule {rule!r} in the bundle's preprocessing; this version reads {', '.join(CROP_RULES)}"
        )
    return lambda image, bbox: crop_square(image, bbox, rule)


def store_side(preprocessing: Preprocessing) -> int:
    """The side ``square_shifted`` crops are shrunk to before the tensor resize."""
    return CROP_STORE_FACTOR * preprocessing.input_size


#: PIL's ``reducing_gap`` for :func:`shrink_crop`: a box-filter reduction by an integer factor first, then
#: bicubic over at least 3x the output size. A 1100-px square to 128 px: 2.8 ms instead of 6.5 ms (the
#: re-label's main cost), pixels within a few levels of plain bicubic (PIL: "indistinguishable in most
#: cases"). Training crops and serving go through this same function, so they stay alike.
REDUCING_GAP = 3.0


def shrink_crop(crop: Image.Image, max_side: int) -> Image.Image:
    """First step of the ``square_shifted`` chain: a square larger than ``max_side`` is shrunk to it."""
    if crop.width <= max_side and crop.height <= max_side:
        return crop
    return crop.resize((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP)


def stored_crop(crop: Image.Image, preprocessing: Preprocessing) -> Image.Image:
    """A square crop as the trainer stores it: after the rule's first resize step (none for ``square``)."""
    if preprocessing.crop == SQUARE:
        return crop
    return shrink_crop(crop, store_side(preprocessing))


def eval_transform(preprocessing: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """The tensor step of the chain: resize to the input, to tensor, normalize (a stored crop's input)."""
    size = preprocessing.input_size
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((size, size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std)),
        ]
    )


def input_transform(preprocessing: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """The whole chain from a square crop of any size to the network's input, as serving runs it.

    Raises:
        BundleError: the crop rule is not one this version knows.
    """
    crop_rule(preprocessing.crop)
    tensor = eval_transform(preprocessing)
    return lambda crop: tensor(stored_crop(crop, preprocessing))
