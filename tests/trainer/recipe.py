"""Helpers of the from-files tests: MegaDetector results made by our pipeline, and camtrap run as a user runs it.

The results file is made by the ``/v1/detect`` path (``backend.vision.pipeline.Pipeline`` written with
``backend.formats.megadetector.md_output``) over a folder, with the offline MegadetectorLite detector
(real camera-trap boxes, no download). ``camtrap detect`` is built in another branch; once merged, these
tests should call it instead.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from backend.config import Settings
from backend.formats.megadetector import md_image, md_output
from backend.vision import mdlite_assets
from backend.vision.detector import Detector
from backend.vision.mdlite import MDLiteModel
from backend.vision.pipeline import Pipeline
from backend.vision.thresholds import Thresholds

REPO = Path(__file__).resolve().parents[2]
#: Tiny training: the machine is small and shared.
TINY_TRAIN = [
    "--backbone",
    "mobilenet_v3_small",
    "--input-size",
    "32",
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--min-examples",
    "2",
]


class MDLiteAsMegaDetector:
    """MegadetectorLite behind the one method ``Detector`` calls on a megadetector ``PTDetector``."""

    def __init__(self, model: MDLiteModel) -> None:
        self.model = model

    def generate_detections_one_batch(
        self, images: list, image_id: list[str], detection_threshold: float, image_size: int | None = None
    ) -> list[dict]:
        found = self.model.detect(images, detection_threshold)
        return [
            {"file": name, "detections": [{"category": c, "conf": conf, "bbox": list(b)} for c, conf, b in dets]}
            for name, dets in zip(image_id, found, strict=True)
        ]


def detect_folder(images: Path, names: Sequence[str], output: Path, threshold: float = 0.05) -> dict:
    """MegaDetector results for ``images/<name>`` (relative file names), written to ``output``."""
    model = MDLiteModel.load(*mdlite_assets.asset_paths(mdlite_assets.fetch()))
    detector = Detector(MDLiteAsMegaDetector(model), "mdlite_yolox_tiny.pt", batch_size=4)
    pipeline = Pipeline(detector, fetch_threads=2, max_pixels=Settings().max_image_pixels)
    thresholds = Thresholds(detection=threshold, classify=threshold, show=threshold, species=1.0)
    try:
        sources = [functools.partial((images / n).read_bytes) for n in names]
        results = pipeline.run(list(names), sources, None, thresholds)
    finally:
        pipeline.close()
    document = md_output(
        [md_image(r.name, r.boxes, [], r.failure) for r in results], detector.model_name, [], "detector-only"
    )
    output.write_text(json.dumps(document, indent=1))
    return document


def run(
    command: Sequence[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command as a user would, with the venv's ``camtrap`` first on PATH and one torch thread."""
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "DATA_DIR": str(cwd / "data"),
    }
    environment.pop("LABEL_STUDIO_URL", None)
    environment.update(env or {})
    return subprocess.run(list(command), cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


def camtrap(
    args: Sequence[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return run([str(Path(sys.executable).with_name("camtrap")), *args], cwd, timeout, env)
