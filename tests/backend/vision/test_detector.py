"""Detector: the real megadetector loader on the tiny checkpoint; MegadetectorLite's real weights behind the
same interface, on the shared ENA24 photos."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from backend.config import Settings
from backend.contracts import registry
from backend.vision.crop import square_crop_region
from backend.vision.detector import Detector
from tests.backend.conftest import PHOTOS


def test_detect_batches_real_photos_in_order(detector: Detector, ena24_dir: Path) -> None:
    names = PHOTOS + PHOTOS[:3]  # 6 images: two batches of 4 and 2
    images = [Image.open(ena24_dir / name).convert("RGB") for name in names]
    results = detector.detect(images, names, threshold=0.2)
    assert len(results) == 6
    for detections in results:
        assert isinstance(detections, list) and detections
        assert all(d.conf >= 0.2 and d.category in {"1", "2", "3"} for d in detections)
        assert [d.conf for d in detections] == sorted((d.conf for d in detections), reverse=True)
    assert results[0] == results[3]  # same image, same answer, whatever batch it was in


def test_detector_id_names_the_checkpoint(detector: Detector) -> None:
    assert detector.id == "md_tiny_md_v5"


# --- MegadetectorLite behind the same interface -----------------------------------------------------------


@pytest.fixture(scope="module")
def mdlite_found(mdlite_detector: Detector, ena24_dir: Path, ena24_labels: dict[str, str]) -> dict[str, list]:
    """Every shared ENA24 photo through ``Detector.detect`` at the lowest kept confidence (0.01)."""
    names = sorted(ena24_labels)
    images = [Image.open(ena24_dir / name).convert("RGB") for name in names]
    return dict(zip(names, mdlite_detector.detect(images, names, Settings().detection_threshold), strict=True))


def test_mdlite_is_named_in_the_model_version(mdlite_detector: Detector) -> None:
    assert mdlite_detector.model_name == "mdlite" and mdlite_detector.fallback_reason is None
    assert registry.model_version(mdlite_detector.id, None) == "mdlite+none"


def test_mdlite_boxes_most_photos_at_the_show_threshold(
    mdlite_found: dict[str, list], ena24_labels: dict[str, str]
) -> None:
    show = Settings().show_threshold
    assert len(mdlite_found) == 21
    shown = {name for name, found in mdlite_found.items() if any(d.category == "1" and d.conf >= show for d in found)}
    assert len(shown) >= 18, f"only {len(shown)} of 21 photos get an animal box: {sorted(set(mdlite_found) - shown)}"
    assert {ena24_labels[name] for name in shown} == set(ena24_labels.values())  # every species is boxed
    for found in mdlite_found.values():
        assert all(d.category == "1" for d in found)  # MegaDetector's animal, the only class
        assert [d.conf for d in found] == sorted((d.conf for d in found), reverse=True)


def test_mdlite_crops_for_the_classifier_hold_the_animal_box(mdlite_found: dict[str, list], ena24_dir: Path) -> None:
    classify = Settings().classify_threshold
    tops = {name: found[0] for name, found in mdlite_found.items() if found and found[0].conf >= classify}
    assert len(tops) >= 19
    for name, top in tops.items():
        image = Image.open(ena24_dir / name)
        x, y, w, h = top.bbox
        assert 0 <= x and 0 <= y and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9, name
        assert 0.002 <= w * h <= 0.6, (name, top.bbox)  # an animal, not a speck or the whole frame
        region = square_crop_region(top.bbox, image.width, image.height)
        assert region is not None
        left, top_px, right, bottom, _ = region
        assert left <= x * image.width + 2 and top_px <= y * image.height + 2, name  # pixels are truncated
        assert right >= (x + w) * image.width - 2 and bottom >= (y + h) * image.height - 2, name  # box inside crop
    centres = {(round(t.bbox[0] + t.bbox[2] / 2, 1), round(t.bbox[1] + t.bbox[3] / 2, 1)) for t in tops.values()}
    assert len(centres) >= 10  # boxes follow the animals around the frame, not one fixed spot


def test_mdlite_detector_scores_rgb_not_bgr(mdlite_detector: Detector, ena24_dir: Path) -> None:
    """Colour order pinned through the interface: zamba feeds RGB; the chicken in 5840.jpg needs it."""
    photo = Image.open(ena24_dir / "5840.jpg").convert("RGB")
    swapped = Image.merge("RGB", photo.split()[::-1])
    rgb, bgr = mdlite_detector.detect([photo, swapped], ["rgb", "bgr"], 0.01)
    assert isinstance(rgb, list) and isinstance(bgr, list)
    assert rgb[0].conf > 0.6 and (not bgr or bgr[0].conf < 0.3)


def test_mdlite_detector_pads_top_left_black(mdlite_detector: Detector, ena24_dir: Path) -> None:
    """Letterbox pinned through the interface: a photo pasted top-left on black gives the same boxes
    (scaled), because the network input is the same picture in the same top-left, black-padded place."""
    photo = Image.open(ena24_dir / "2480.jpg").convert("RGB")  # 1920 x 1080
    canvas = Image.new("RGB", (1920, 1920), (0, 0, 0))
    canvas.paste(photo, (0, 0))
    grey = Image.new("RGB", (1920, 1920), (114, 114, 114))
    grey.paste(photo, (0, 420))  # YOLOX's own convention: centred on grey
    alone, padded, centred = mdlite_detector.detect([photo, canvas, grey], ["a", "b", "c"], 0.2)
    assert isinstance(alone, list) and isinstance(padded, list) and isinstance(centred, list)
    assert alone and len(padded) == len(alone)
    assert padded[0].conf == pytest.approx(alone[0].conf, abs=1e-3)
    x, y, w, h = alone[0].bbox
    assert padded[0].bbox == pytest.approx((x, y * 1080 / 1920, w, h * 1080 / 1920), abs=2e-3)
    assert not centred or centred[0].conf != pytest.approx(alone[0].conf, abs=1e-3)


def test_mdlite_batches_like_single_images(mdlite_detector: Detector, ena24_dir: Path) -> None:
    names = PHOTOS + PHOTOS[:3]  # two batches of 4 and 2
    images = [Image.open(ena24_dir / name).convert("RGB") for name in names]
    results = mdlite_detector.detect(images, names, 0.1)
    assert len(results) == 6
    for first, again in zip(results[:3], results[3:], strict=True):
        assert isinstance(first, list) and isinstance(again, list) and len(first) == len(again)
        for a, b in zip(first, again, strict=True):
            assert a.conf == pytest.approx(b.conf, abs=1e-3) and a.bbox == pytest.approx(b.bbox, abs=1e-3)
