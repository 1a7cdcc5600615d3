"""Detector: the real megadetector loader on the tiny checkpoint, batches, thresholds."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

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
