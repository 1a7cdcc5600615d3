"""The shared crop: MegaDetector's square crop with zero padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from backend.contracts.bundle import Preprocessing
from backend.errors import BundleError
from backend.vision.crop import (
    SQUARE,
    SQUARE_SHIFTED,
    crop_rule,
    crop_square,
    eval_transform,
    input_transform,
    square_crop_region,
    stored_crop,
)


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


def test_an_edge_box_gets_no_padding_where_the_image_has_pixels() -> None:
    """A tall box at the right edge: its square reaches past the border, so it is shifted back inside."""
    image = Image.new("RGB", (1000, 600), (255, 255, 255))
    bbox = [0.95, 0.3, 0.05, 0.4]  # 50 x 240 px, touching the right edge
    crop = crop_square(image, bbox)
    assert crop is not None and crop.size == (240, 240)
    assert (np.asarray(crop) == 255).all(), "every pixel of the square comes from the image"
    assert square_crop_region(bbox, 1000, 600)[:4] == (760, 180, 1000, 420)
    old = np.asarray(crop_square(image, bbox, SQUARE))
    assert (old[:, -1] == 0).all(), "the old rule ('square' bundles) pads the right side black"
    assert (old == 0).all(axis=2).mean() > 0.3


def test_crop_rule_refuses_a_rule_it_does_not_know() -> None:
    with pytest.raises(BundleError, match="unknown crop rule 'circle'"):
        crop_rule("circle")
    assert crop_rule(SQUARE_SHIFTED)(Image.new("RGB", (10, 10)), [0, 0, 0.5, 0.5]).size == (5, 5)


def test_the_chain_shrinks_large_crops_before_the_tensor_resize() -> None:
    pre = Preprocessing(input_size=32)
    rng = np.random.default_rng(0)
    crop = Image.fromarray(rng.integers(0, 255, (1000, 1000, 3), dtype=np.uint8))
    assert stored_crop(crop, pre).size == (64, 64)
    assert torch.equal(input_transform(pre)(crop), eval_transform(pre)(stored_crop(crop, pre)))
    old = Preprocessing(input_size=32, crop=SQUARE)
    assert stored_crop(crop, old) is crop and torch.equal(input_transform(old)(crop), eval_transform(old)(crop))
