"""MegaDetector batch output format ("MD JSON"): what Timelapse, AddaxAI and EcoAssist read.

Written as ``megadetector``'s own writer does (``format_version`` from the package, confidences to 3
and coordinates to 4 decimals, ``failure`` strings with ``detections: null``) and checked in the tests
with ``megadetector.postprocessing.validate_batch_results``. Reference: ``../shared/docs/user-formats.md`` §3.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from backend.vision.categories import MD_CATEGORIES
from backend.vision.pipeline import Box

#: Decimal places of confidences and normalized coordinates (as ``megadetector`` writes them).
CONF_DIGITS = 3
COORD_DIGITS = 4
#: MegaDetector's ``failure`` value for an image that could not be read.
FAILURE_IMAGE_OPEN = "image access failure"


def md_image(file: str, boxes: list[Box] | None, labels: list[str], failure: str | None = None) -> dict:
    """One ``images[]`` entry: detections with ``classifications`` ``[[class id, score]]``, or a failure."""
    if boxes is None:
        return {"file": file, "detections": None, "failure": FAILURE_IMAGE_OPEN, "failure_detail": failure}
    detections = []
    for box in boxes:
        det = box.detection
        entry = {
            "category": det.category,
            "conf": round(det.conf, CONF_DIGITS),
            "bbox": [round(min(max(float(v), 0.0), 1.0), COORD_DIGITS) for v in det.bbox],
        }
        if box.species is not None and box.species.label in labels:
            entry["classifications"] = [[str(labels.index(box.species.label)), round(box.species.score, CONF_DIGITS)]]
        detections.append(entry)
    return {"file": file, "detections": detections, "failure": None}


def md_output(images: list[dict], detector_model: str, labels: list[str], model_version: str) -> dict:
    """The MegaDetector batch output document (format 1.x) for a list of :func:`md_image` entries."""
    from megadetector.detection.run_detector import (
        get_detector_metadata_from_version_string,
        get_detector_version_from_filename,
    )
    from megadetector.detection.run_detector_batch import current_format_version

    name = Path(detector_model).name
    version = get_detector_version_from_filename(name)
    info = {
        "format_version": current_format_version,
        "detector": name,
        "detector_metadata": get_detector_metadata_from_version_string(version),
        "detection_completion_time": datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        "model_version": model_version,
    }
    return {
        "info": info,
        "detection_categories": dict(MD_CATEGORIES),
        "classification_categories": {str(i): label for i, label in enumerate(labels)},
        "images": images,
    }
