"""The shared crop: MegaDetector's square crop with zero padding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.contracts.bundle import Preprocessing
from backend.vision.crop import crop_square, eval_transform, square_crop_region


def test_square_crop_region_uses_longer_side_centred_on_box() -> None:
    left, top, right, bottom, side = square_crop_region([0.4, 0.4, 0.1, 0.2], 1000, 1000)
    assert side == 200
    assert (left, top, right, bottom) == (350, 400, 550, 600)


def test_square_crop_region_shifts_square_inside_image_at_border() -> None:
    left, top, right, bottom, side = square_crop_region([0.0, 0.0, 0.05, 0.2], 1000, 1000)
    assert (left, top, right - left, bottom - top, side) == (0, 0, 200, 200, 200)


def test_crop_square_zero_pads_when_image_is_smaller_than_square() -> None:
    image = Image.new("RGB", (100, 40), (255, 255, 255))
    crop = crop_square(image, [0.0, 0.0, 1.0, 1.0])
    assert crop is not None and crop.size == (100, 100)
    pixels = np.asarray(crop)
    assert pixels[0, 50].tolist() == [0, 0, 0], "rows above the image are zero padding"
    assert pixels[50, 50].tolist() == [255, 255, 255], "the image itself is in the middle"


@pytest.mark.parametrize(
    "bbox", [pytest.param([0.5, 0.5, 0.0, 0.1], id="zero-width"), pytest.param([0.5, 0.5, 0.1, 0.0], id="zero-height")]
)
def test_crop_square_returns_none_for_empty_box(bbox: list[float]) -> None:
    assert crop_square(Image.new("RGB", (100, 100)), bbox) is None


def test_eval_transform_gives_normalized_square_tensor() -> None:
    tensor = eval_transform(Preprocessing(input_size=48))(Image.new("RGB", (100, 100), (124, 116, 104)))
    assert tuple(tensor.shape) == (3, 48, 48)
    assert float(tensor.abs().max()) < 0.05, "ImageNet mean colour normalizes to ~0"
