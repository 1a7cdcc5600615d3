"""MegaDetector, loaded once per process through the ``megadetector`` package's own loader."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from backend.config import Settings
from backend.contracts.registry import detector_id
from backend.errors import ConfigurationError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    """One MegaDetector box: category id (``"1"`` animal, ``"2"`` person, ``"3"`` vehicle)."""

    category: str
    conf: float
    bbox: tuple[float, float, float, float]
    """``[x_min, y_min, width, height]`` normalized to [0, 1]."""


class Detector:
    """A loaded MegaDetector and the lock that serializes its use (one inference at a time).

    Args:
        model: A ``megadetector`` detector object (``PTDetector``).
        model_name: ``DETECTOR_MODEL`` as configured (name or path).
        batch_size: Images per forward pass.
        image_size: Inference size in pixels, or None for the model's own.
    """

    def __init__(self, model: Any, model_name: str, batch_size: int = 8, image_size: int | None = None) -> None:
        self.model = model
        self.model_name = model_name
        self.id = detector_id(model_name)
        self.batch_size = max(1, batch_size)
        self.image_size = image_size
        self.lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings) -> Detector:
        """Load ``DETECTOR_MODEL`` (a known name such as ``MDV5A`` or a local ``.pt`` file).

        Raises:
            ConfigurationError: the model cannot be found, downloaded or loaded; the message says how to fix it.
        """
        from megadetector.detection.run_detector import load_detector

        name = settings.detector_model
        path = resolve_model_file(name)
        force_cpu = (settings.detector_device or "").lower() == "cpu"
        try:
            model = load_detector(path, force_cpu=force_cpu)
        except Exception as exc:
            raise ConfigurationError(
                f"cannot load MegaDetector {name!r} from {path} ({type(exc).__name__}: {exc}): set DETECTOR_MODEL "
                "to a MegaDetector .pt file"
            ) from exc
        logger.info("loaded detector %s (%s)", name, detector_id(name))
        return cls(model, name, settings.detector_batch_size, settings.detector_image_size)

    def detect(self, images: list[Image.Image], names: list[str], threshold: float) -> list[list[Detection] | str]:
        """Run the detector on images, ``batch_size`` at a time.

        Args:
            images: Decoded RGB images (EXIF orientation applied).
            names: An identifier per image (MegaDetector's ``file`` field).
            threshold: Lowest confidence kept.

        Returns:
            Per image, its detections (highest confidence first) or a failure string.
        """
        results: list[list[Detection] | str] = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            with self.lock, torch.inference_mode():  # megadetector itself runs with autograd on
                raw = self.model.generate_detections_one_batch(
                    batch,
                    image_id=names[start : start + len(batch)],
                    detection_threshold=threshold,
                    image_size=self.image_size,
                )
            results += [_parse(item) for item in raw]
        return results


def resolve_model_file(name: str) -> str:
    """The local file of ``DETECTOR_MODEL``: the path itself, or a known name downloaded and cached.

    Raises:
        ConfigurationError: the path does not exist, or the named model cannot be downloaded.
    """
    from megadetector.detection.run_detector import try_download_known_detector

    if name.endswith((".pt", ".pth", ".pb")) or "/" in name:
        if not Path(name).is_file():
            raise ConfigurationError(
                f"DETECTOR_MODEL={name} does not exist: point it to a MegaDetector .pt file or use a known name "
                "such as MDV5A"
            )
        return name
    try:
        path = try_download_known_detector(name)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot download MegaDetector {name} ({type(exc).__name__}: {exc}): set DETECTOR_MODEL to a local .pt "
            "file, or run once with internet access so the megadetector package downloads and caches it"
        ) from exc
    if not Path(path).is_file():
        raise ConfigurationError(
            f"DETECTOR_MODEL={name} is neither a known MegaDetector name (such as MDV5A) nor an existing file"
        )
    return path


def _bbox(values: Any) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in values)
    return (x, y, w, h)


def _parse(item: dict) -> list[Detection] | str:
    if item.get("failure"):
        return str(item["failure"])
    detections = [
        Detection(str(d["category"]), float(d["conf"]), _bbox(d["bbox"])) for d in item.get("detections") or []
    ]
    return sorted(detections, key=lambda d: d.conf, reverse=True)
