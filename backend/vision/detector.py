"""The detector, loaded once per process: MegaDetector through the ``megadetector`` package's own loader, or
MegadetectorLite (``DETECTOR_MODEL=mdlite``, ``backend.vision.mdlite``), the offline fallback.

Both give the same :class:`Detection` lists (MegaDetector categories; MegadetectorLite only finds ``"1"``,
animal), in batches of ``DETECTOR_BATCH_SIZE``, under one lock. When the named MegaDetector cannot be
downloaded and ``DETECTOR_FALLBACK=mdlite`` (the default), :func:`choose_detector` picks MegadetectorLite and
says so loudly; :attr:`Detector.fallback_reason` keeps why, for ``/health`` and ``/setup``.
"""

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
from backend.vision import mdlite_assets
from backend.vision.device import resolve_device
from backend.vision.mdlite import MDLiteModel
from backend.vision.thread_env import thread_env_kept

logger = logging.getLogger(__name__)

#: ``DETECTOR_MODEL`` (and ``DETECTOR_FALLBACK``) value of MegadetectorLite.
MDLITE = "mdlite"


class DetectorDownloadError(ConfigurationError):
    """A known MegaDetector name (such as MDV5A) that cannot be downloaded: the case DETECTOR_FALLBACK covers."""


@dataclass(frozen=True)
class Detection:
    """One MegaDetector box: category id (``"1"`` animal, ``"2"`` person, ``"3"`` vehicle)."""

    category: str
    conf: float
    bbox: tuple[float, float, float, float]
    """``[x_min, y_min, width, height]`` normalized to [0, 1]."""


class Detector:
    """A loaded detector and the lock that serializes its use (one inference at a time).

    Args:
        model: A ``megadetector`` detector object (``PTDetector``) or a :class:`MDLiteModel`.
        model_name: The detector actually loaded: ``DETECTOR_MODEL`` as configured (name or path), or
            ``mdlite`` when it is the fallback.
        batch_size: Images per forward pass.
        image_size: Inference size in pixels, or None for the model's own (MegaDetector only; MegadetectorLite
            always runs at 640).
        fallback_reason: Why ``mdlite`` runs instead of ``DETECTOR_MODEL`` (None: it is what was asked for).
    """

    def __init__(
        self,
        model: Any,
        model_name: str,
        batch_size: int = 8,
        image_size: int | None = None,
        fallback_reason: str | None = None,
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.id = detector_id(model_name)
        self.batch_size = max(1, batch_size)
        self.image_size = image_size
        self.fallback_reason = fallback_reason
        self.lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings, *, pip: list[str] | None = None) -> Detector:
        """Load ``DETECTOR_MODEL`` (a known name such as ``MDV5A``, a local ``.pt`` file, or ``mdlite``).

        Args:
            settings: DETECTOR_* settings.
            pip: How to run pip when MegadetectorLite's weights must be fetched (see ``mdlite_assets.fetch``).

        Raises:
            ConfigurationError: the model cannot be found, downloaded or loaded; the message says how to fix it.
        """
        choice = choose_detector(settings)
        if choice.name == MDLITE:
            model = load_mdlite(settings, pip=pip)
            logger.info("loaded detector %s (%s)", MDLITE, detector_id(MDLITE))
            return cls(model, MDLITE, settings.detector_batch_size, None, choice.fallback_reason)
        from megadetector.detection.run_detector import load_detector

        name = settings.detector_model
        force_cpu = (settings.detector_device or "").lower() == "cpu"
        try:
            with thread_env_kept():  # yolov5's import rewrites OMP_NUM_THREADS for every later child process
                model = load_detector(choice.path, force_cpu=force_cpu)
        except Exception as exc:
            raise ConfigurationError(
                f"cannot load MegaDetector {name!r} from {choice.path} ({type(exc).__name__}: {exc}): set "
                "DETECTOR_MODEL to a MegaDetector .pt file"
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
            if isinstance(self.model, MDLiteModel):
                with self.lock:
                    found = self.model.detect(batch, threshold)
                results += [[Detection(category, conf, box) for category, conf, box in item] for item in found]
                continue
            with self.lock, torch.inference_mode():  # megadetector itself runs with autograd on
                raw = self.model.generate_detections_one_batch(
                    batch,
                    image_id=names[start : start + len(batch)],
                    detection_threshold=threshold,
                    image_size=self.image_size,
                )
            results += [_parse(item) for item in raw]
        return results


@dataclass(frozen=True)
class DetectorChoice:
    """Which detector to load: ``mdlite``, or a MegaDetector file; and why ``mdlite`` when it is the fallback."""

    name: str
    path: str | None = None
    fallback_reason: str | None = None


def choose_detector(settings: Settings) -> DetectorChoice:
    """``DETECTOR_MODEL`` resolved: ``mdlite``, a MegaDetector file, or ``mdlite`` as the fallback.

    The fallback applies when DETECTOR_MODEL is a known name (such as MDV5A) that cannot be downloaded and
    DETECTOR_FALLBACK is ``mdlite``; it is logged as a warning. A path that does not exist, or an unknown
    name, stays an error.

    Raises:
        ConfigurationError: the MegaDetector cannot be found or downloaded and there is no fallback.
    """
    name = settings.detector_model
    if name.lower() == MDLITE:
        return DetectorChoice(MDLITE)
    try:
        return DetectorChoice(name, resolve_model_file(name))
    except DetectorDownloadError as exc:
        if settings.detector_fallback != MDLITE:
            raise
        reason = f"DETECTOR_MODEL={name} cannot be downloaded"
        logger.warning(
            "!!! %s; running MegadetectorLite (DETECTOR_MODEL=mdlite: animals only, no person or vehicle, misses "
            "some small animals) instead; set DETECTOR_FALLBACK=none to refuse to start, or run once with "
            "internet access to cache %s (%s) !!!",
            reason,
            name,
            exc,
        )
        return DetectorChoice(MDLITE, fallback_reason=reason)


def load_mdlite(settings: Settings, *, pip: list[str] | None = None) -> MDLiteModel:
    """MegadetectorLite from the user cache, fetched from the zamba wheel first when its files are missing.

    Raises:
        ConfigurationError: the files are missing or corrupt and cannot be fetched (one sentence, with the fix).
    """
    try:
        mdlite_assets.verify()
    except mdlite_assets.MissingAssetError as missing:
        logger.warning("%s; fetching it now (pip download zamba==%s)", missing, mdlite_assets.ZAMBA_VERSION)
        try:
            mdlite_assets.fetch(pip=pip)
        except mdlite_assets.MissingAssetError as exc:
            raise ConfigurationError(
                f"MegadetectorLite's weights are not in {mdlite_assets.default_cache_dir()} and cannot be fetched "
                f"({exc}); run `camtrap fetch mdlite` where PyPI can be reached"
            ) from exc
    try:
        return MDLiteModel.load(*mdlite_assets.asset_paths(), device=str(resolve_device(settings.detector_device)))
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc


def resolve_model_file(name: str) -> str:
    """The local file of ``DETECTOR_MODEL``: the path itself, or a known name downloaded and cached.

    Raises:
        DetectorDownloadError: the named model cannot be downloaded.
        ConfigurationError: the path does not exist, or the name is neither known nor a file.
    """
    from megadetector.detection.run_detector import try_download_known_detector

    if _is_path(name):
        if not Path(name).is_file():
            raise ConfigurationError(
                f"DETECTOR_MODEL={name} does not exist: point it to a MegaDetector .pt file or use a known name "
                "such as MDV5A"
            )
        return name
    try:
        path = try_download_known_detector(name)
    except Exception as exc:
        raise DetectorDownloadError(
            f"cannot download MegaDetector {name} ({type(exc).__name__}: {exc}): set DETECTOR_MODEL to a local .pt "
            "file, or run once with internet access so the megadetector package downloads and caches it"
        ) from exc
    if not path:  # megadetector gives None when the download fails its checks
        raise DetectorDownloadError(
            f"the download of MegaDetector {name} failed its integrity check: run again with internet access, or "
            "set DETECTOR_MODEL to a local .pt file"
        )
    if not Path(path).is_file():
        raise ConfigurationError(
            f"DETECTOR_MODEL={name} is neither a known MegaDetector name (such as MDV5A) nor an existing file"
        )
    return path


def _is_path(name: str) -> bool:
    return name.endswith((".pt", ".pth", ".pb")) or "/" in name


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
