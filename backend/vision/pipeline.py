"""Image -> boxes -> species: the pure pipeline every path runs (``/predict``, ``/v1/detect``, jobs, CLI).

No HTTP, Label Studio or Redis in here: an image arrives as a callable returning its bytes, and what
comes out is an :class:`ImageResult` per image (boxes with species, or why it failed). Steps, per
batch of ``detector.batch_size`` images: fetch and decode in parallel (a thread pool), detect on the
batch, crop every animal box at or above the classify threshold and classify the crops in one call.
A failure fails that image, never the batch. See ``docs/architecture.md`` for where it sits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from backend.errors import ImageError
from backend.vision.categories import ANIMAL_CATEGORY
from backend.vision.classifier import Prediction, SpeciesClassifier
from backend.vision.decode import decode_image
from backend.vision.detector import Detection, Detector
from backend.vision.thresholds import Thresholds

logger = logging.getLogger(__name__)

#: Returns one image's encoded bytes, or raises ``ImageError`` saying why it cannot.
ImageSource = Callable[[], bytes]


@dataclass(frozen=True)
class Box:
    """A detection and, for a classified animal box, the species guess."""

    detection: Detection
    species: Prediction | None = None

    @property
    def is_animal(self) -> bool:
        return self.detection.category == ANIMAL_CATEGORY


@dataclass
class ImageResult:
    """One image through the pipeline: its name, its size, its boxes, or the reason it failed."""

    name: str
    size: tuple[int, int] = (0, 0)
    boxes: list[Box] | None = None
    failure: str | None = None
    image: Image.Image | None = None
    """The decoded pixels, only while its batch is being processed."""


class PipelineObserver(Protocol):
    """Where the pipeline reports timings and failures (the service's Prometheus metrics)."""

    def stage_seconds(self, stage: str, seconds: float) -> None: ...

    def image_failed(self, stage: str) -> None: ...


class _Silent:
    def stage_seconds(self, stage: str, seconds: float) -> None:
        pass

    def image_failed(self, stage: str) -> None:
        pass


class Pipeline:
    """The detector plus a pool of fetch threads; one per process.

    Args:
        detector: The loaded detector (its lock serializes forward passes and classification).
        fetch_threads: Images fetched and decoded in parallel.
        max_pixels: Largest accepted image, in pixels (``MAX_IMAGE_PIXELS``).
        observer: Receives stage timings and failures (nothing by default).
    """

    def __init__(
        self, detector: Detector, *, fetch_threads: int, max_pixels: int, observer: PipelineObserver | None = None
    ) -> None:
        self.detector = detector
        self.max_pixels = max_pixels
        self.observer: PipelineObserver = observer or _Silent()
        self._fetcher = ThreadPoolExecutor(max(1, fetch_threads), thread_name_prefix="image-fetch")

    def close(self) -> None:
        self._fetcher.shutdown(wait=False, cancel_futures=True)

    def run(
        self,
        names: Sequence[str],
        sources: Sequence[ImageSource],
        classifier: SpeciesClassifier | None,
        thresholds: Thresholds,
    ) -> list[ImageResult]:
        """Fetch + decode (in parallel) -> detect (batched) -> classify animal boxes, for a list of images.

        Args:
            names: An identifier per image (logs, MegaDetector ``file``).
            sources: Per image, a callable returning its bytes (raising ``ImageError`` on failure).
            classifier: The species classifier for the whole call, or None for boxes only.
            thresholds: The project's thresholds.

        Returns:
            An :class:`ImageResult` per image, in order: ``boxes`` set, or ``failure`` saying why not.
        """
        results = [ImageResult(name) for name in names]
        futures = [self._fetcher.submit(self._fetch_and_decode, source) for source in sources]
        batch = self.detector.batch_size
        for start in range(0, len(results), batch):
            chunk = list(zip(results[start : start + batch], futures[start : start + batch], strict=True))
            started = time.perf_counter()
            for result, future in chunk:
                self._collect(result, future)
            self.observer.stage_seconds("fetch", time.perf_counter() - started)
            decoded = [result for result, _ in chunk if result.image is not None]
            self._detect(decoded, thresholds)
            if classifier is not None:
                self._classify([r for r in decoded if r.boxes], classifier, thresholds)
            for result, _ in chunk:
                result.image = None  # keep only the size: a batch's pixels are released as it completes
        return results

    def _fetch_and_decode(self, source: ImageSource) -> Image.Image:
        return decode_image(source(), max_pixels=self.max_pixels)

    def _collect(self, result: ImageResult, future: Future[Image.Image]) -> None:
        try:
            result.image = future.result()
            result.size = result.image.size
        except ImageError as exc:
            result.failure = str(exc)
            self.observer.image_failed("fetch")
        except Exception as exc:  # a bug must fail this image, not the batch
            logger.exception("unexpected error reading %s", result.name)
            result.failure = f"internal error reading the image ({type(exc).__name__})"
            self.observer.image_failed("fetch")

    def _detect(self, results: list[ImageResult], thresholds: Thresholds) -> None:
        if not results:
            return
        started = time.perf_counter()
        images = [r.image for r in results if r.image is not None]
        try:
            outputs = self.detector.detect(images, [r.name for r in results], thresholds.detection)
        except Exception as exc:
            logger.exception("detector failed on a batch of %d images", len(results))
            outputs = [f"inference failure ({type(exc).__name__})"] * len(results)
        self.observer.stage_seconds("detect", time.perf_counter() - started)
        for result, output in zip(results, outputs, strict=True):
            if isinstance(output, str):
                result.failure = f"detector: {output}"
                self.observer.image_failed("detect")
            else:
                result.boxes = [Box(d) for d in output]

    def _classify(self, results: list[ImageResult], classifier: SpeciesClassifier, thresholds: Thresholds) -> None:
        targets: list[tuple[ImageResult, int]] = []
        crops: list[Image.Image] = []
        for result in results:
            assert result.boxes is not None and result.image is not None
            for index, box in enumerate(result.boxes):
                if box.is_animal and box.detection.conf >= thresholds.classify:
                    crop = classifier.crop(result.image, box.detection.bbox)
                    if crop is not None:
                        targets.append((result, index))
                        crops.append(crop)
        if not crops:
            return
        started = time.perf_counter()
        try:
            with self.detector.lock:
                guesses = classifier.classify(crops)
        except Exception:
            logger.exception(
                "classifier %s failed on %d crops; boxes are sent without species", classifier.version, len(crops)
            )
            return
        self.observer.stage_seconds("classify", time.perf_counter() - started)
        for (result, index), guess in zip(targets, guesses, strict=True):
            assert result.boxes is not None
            result.boxes[index] = Box(result.boxes[index].detection, guess)
