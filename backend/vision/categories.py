"""MegaDetector's detection categories (``megadetector.detection.run_detector.DEFAULT_DETECTOR_LABEL_MAP``)."""

from __future__ import annotations

#: Category id -> name, as MegaDetector writes them in ``detection_categories``.
MD_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
ANIMAL_CATEGORY = "1"
PERSON_CATEGORY = "2"
VEHICLE_CATEGORY = "3"
