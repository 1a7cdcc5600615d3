"""Image -> boxes -> species: the pure pipeline every path runs (``/predict``, ``/v1/detect``, jobs, CLI).

No HTTP, Label Studio or Redis in here: an image arrives as a callable returning its bytes, and what
comes out is an :class:`ImageResult` per image (boxes with species, or why it failed). Steps, per
batch of ``detector.batch_size`` images: fetch and decode in parallel (a thread pool), detect on the
batch, crop every animal box at or above the classify threshold and classify the crops in one call.
With a :class:`~backend.contracts.detection_store.DetectionStore`, every image is looked up by the
sha256 of its bytes first: stored images skip the detector, misses run it and are written to the
store, so every path (``/predict``, ``/v1/detect``, pre-annotation, the CLI) shares one result.
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

from backend.contracts.detection_store import DetectionStore, StoredImage, content_key, detector_key
from backend.errors import ImageError
from backend.vision.categories import ANIMAL_CATEGORY
from backend.vision.classifier import Prediction, SpeciesClassifier
from backend.vision.counters import counters
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
    """The decoded pixels, only while its batch is being processed (never decoded when the store answers and
    no box needs cropping)."""
    key: str | None = None
    """The sha256 of the image's bytes (its detection store key), once fetched."""
    cached: bool = False
    """True when the boxes came from the detection store (the detector did not run on it)."""
    stored: StoredImage | None = None
    """The store's entry, looked up by the fetch thread (only while its batch is being processed)."""


class PipelineObserver(Protocol):
    """Where the pipeline reports timings and failures (the service's Prometheus metrics)."""

    def stage_seconds(self, stage: str, seconds: float) -> None: ...

    def image_failed(self, stage: str) -> None: ...

    def detector_images(self, count: int) -> None:
        """``count`` images went through the detector's forward pass."""

    def classifier_crops(self, count: int) -> None:
        """``count`` crops went through the species classifier."""


class _Silent:
    def stage_seconds(self, stage: str, seconds: float) -> None:
        pass

    def image_failed(self, stage: str) -> None:
        pass

    def detector_images(self, count: int) -> None:
        pass

    def classifier_crops(self, count: int) -> None:
        pass


class Pipeline:
    """The detector plus a pool of fetch threads; one per process.

    Args:
        detector: The loaded detector (its lock serializes forward passes and classification).
        fetch_threads: Images fetched and decoded in parallel.
        max_pixels: Largest accepted image, in pixels (``MAX_IMAGE_PIXELS``).
        observer: Receives stage timings, failures and counts (nothing by default).
        store: The detection store, read before the detector and written after it (None: always detect).
    """

    def __init__(
        self,
        detector: Detector,
        *,
        fetch_threads: int,
        max_pixels: int,
        observer: PipelineObserver | None = None,
        store: DetectionStore | None = None,
    ) -> None:
        self.detector = detector
        self.max_pixels = max_pixels
        self.observer: PipelineObserver = observer or _Silent()
        self.store = store
        self.store_detector = detector_key(detector.id, detector.image_size)
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
        crops = classifier is not None
        futures = [self._fetcher.submit(self._fetch_and_decode, source, thresholds, crops) for source in sources]
        batch = self.detector.batch_size
        for start in range(0, len(results), batch):
            chunk = list(zip(results[start : start + batch], futures[start : start + batch], strict=True))
            started = time.perf_counter()
            for result, future in chunk:
                self._collect(result, future)
            self.observer.stage_seconds("fetch", time.perf_counter() - started)
            fetched = [result for result, _ in chunk if result.failure is None]
            self._detect(fetched, thresholds)
            if classifier is not None:
                self._classify([r for r in fetched if r.boxes], classifier, thresholds)
            for result, _ in chunk:
                result.image = None  # keep only the size: a batch's pixels are released as it completes
                result.stored = None
        return results

    def _fetch_and_decode(self, source: ImageSource, thresholds: Thresholds, crops: bool) -> _Fetched:
        """Bytes -> store key -> the store's entry; the pixels are decoded only when something needs them.

        A stored image whose size is known and that has no box to crop (no classifier, or no animal box at the
        classify threshold) is answered without decoding: decoding a 2-megapixel JPEG costs ~20 ms, most of a
        one-task ``/predict`` from the store.
        """
        data = source()
        key = content_key(data)
        entry = self._stored(key, thresholds.detection)
        if entry is not None and entry.width and entry.height and not (crops and _to_crop(entry, thresholds)):
            return _Fetched(key, None, entry, (entry.width, entry.height))
        image = decode_image(data, max_pixels=self.max_pixels)
        return _Fetched(key, image, entry, image.size)

    def _stored(self, key: str, threshold: float) -> StoredImage | None:
        return None if self.store is None else self.store.get(key, self.store_detector, threshold)

    def _collect(self, result: ImageResult, future: Future[_Fetched]) -> None:
        try:
            fetched = future.result()
            result.key, result.image = fetched.key, fetched.image
            result.stored, result.size = fetched.entry, fetched.size
        except ImageError as exc:
            result.failure = str(exc)
            self.observer.image_failed("fetch")
        except Exception as exc:  # a bug must fail this image, not the batch
            logger.exception("unexpected error reading %s", result.name)
            result.failure = f"internal error reading the image ({type(exc).__name__})"
            self.observer.image_failed("fetch")

    def _detect(self, results: list[ImageResult], thresholds: Thresholds) -> None:
        results = [r for r in results if not self._from_store(r)]
        if not results:
            return
        started = time.perf_counter()
        images = [r.image for r in results if r.image is not None]
        try:
            outputs = self.detector.detect(images, [r.name for r in results], thresholds.detection)
        except Exception as exc:
            logger.exception("detector failed on a batch of %d images", len(results))
            outputs = [f"inference failure ({type(exc).__name__})"] * len(results)
        else:
            counters().detector_images.inc(len(images))
            self.observer.detector_images(len(images))
        self.observer.stage_seconds("detect", time.perf_counter() - started)
        for result, output in zip(results, outputs, strict=True):
            if isinstance(output, str):
                result.failure = f"detector: {output}"
                self.observer.image_failed("detect")
            else:
                result.boxes = [Box(d) for d in output]
                self._to_store(result, output, thresholds.detection)

    def _from_store(self, result: ImageResult) -> bool:
        """Fill ``result.boxes`` from the store entry its fetch found; False on a miss (no store, no entry,
        corrupt entry, or one kept above the detection threshold)."""
        if result.stored is None:
            return False
        result.boxes = [Box(d) for d in detections_of(result.stored)]
        result.cached = True
        return True

    def _to_store(self, result: ImageResult, detections: list[Detection], threshold: float) -> None:
        if self.store is None or result.key is None:
            return
        entry = stored_image(detections, threshold, result.size)
        try:
            self.store.put(result.key, self.store_detector, entry)
        except OSError as exc:  # a full disk costs a recomputation later, not this answer
            logger.warning("cannot write the detection store entry of %s (%s)", result.name, exc)

    def _classify(self, results: list[ImageResult], classifier: SpeciesClassifier, thresholds: Thresholds) -> None:
        targets: list[tuple[ImageResult, int]] = []
        crops: list[Image.Image] = []
        for result in results:
            assert result.boxes is not None
            if result.image is None:  # answered from the store with nothing to crop (see _fetch_and_decode)
                continue
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
        counters().classifier_crops.inc(len(crops))
        self.observer.classifier_crops(len(crops))
        self.observer.stage_seconds("classify", time.perf_counter() - started)
        for (result, index), guess in zip(targets, guesses, strict=True):
            assert result.boxes is not None
            result.boxes[index] = Box(result.boxes[index].detection, guess)


@dataclass(frozen=True)
class _Fetched:
    """What a fetch thread hands back: the store key, the pixels (None: not needed), the store's entry, the size."""

    key: str
    image: Image.Image | None
    entry: StoredImage | None
    size: tuple[int, int]


def _to_crop(entry: StoredImage, thresholds: Thresholds) -> bool:
    """True when a stored image has an animal box the classifier would crop (the rule of ``_classify``)."""
    return any(d.category == ANIMAL_CATEGORY and d.conf >= thresholds.classify for d in detections_of(entry))


def detections_of(entry: StoredImage) -> list[Detection]:
    """A store entry's detections as :class:`Detection` objects (highest confidence first)."""
    return [
        Detection(str(d["category"]), float(d["conf"]), (d["bbox"][0], d["bbox"][1], d["bbox"][2], d["bbox"][3]))
        for d in entry.detections
    ]


def stored_image(detections: Sequence[Detection], threshold: float, size: tuple[int, int]) -> StoredImage:
    """What the store keeps of one image's detector output."""
    width, height = size
    return StoredImage(
        [{"category": d.category, "conf": float(d.conf), "bbox": [float(v) for v in d.bbox]} for d in detections],
        float(threshold),
        width or None,
        height or None,
    )


class StoreLookup:
    """Image bytes -> the store's detections for ``detector`` (a :func:`detector_key`), or None on a miss."""

    def __init__(self, store: DetectionStore, detector: str) -> None:
        self.store = store
        self.detector = detector

    def __call__(self, image: bytes) -> list[Detection] | None:
        entry = self.store.get(content_key(image), self.detector)
        return detections_of(entry) if entry is not None else None
