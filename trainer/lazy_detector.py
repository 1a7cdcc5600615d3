"""A detector loaded on its first forward pass, for jobs whose images are mostly in the detection store.

Loading the MDv5a-size model takes about a minute on a 2-core CPU, far longer than re-classifying the
crops of a few hundred stored images; a re-label job (``trainer.relabel``) whose every image is stored
never loads it. Its ``id`` and ``image_size`` (the store's detector key) are known from the settings
without loading, exactly as ``Detector.load`` sets them.
"""

from __future__ import annotations

import logging
import threading

from PIL import Image

from backend.config import Settings
from backend.vision.detector import MDLITE, Detection, Detector, choose_detector

logger = logging.getLogger(__name__)


class LazyDetector(Detector):
    """``Detector.load(settings)`` deferred until :meth:`detect` is first called."""

    def __init__(self, settings: Settings) -> None:
        choice = choose_detector(settings)
        mdlite = choice.name == MDLITE
        super().__init__(
            None,
            MDLITE if mdlite else settings.detector_model,
            settings.detector_batch_size,
            None if mdlite else settings.detector_image_size,
            choice.fallback_reason,
        )
        self._settings = settings
        self._loaded: Detector | None = None
        self._load_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def detect(self, images: list[Image.Image], names: list[str], threshold: float) -> list[list[Detection] | str]:
        with self._load_lock:
            if self._loaded is None:
                logger.info("a store miss: loading the detector")
                self._loaded = Detector.load(self._settings)
        return self._loaded.detect(images, names, threshold)
