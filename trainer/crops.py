"""The crop dataset: every labelled animal cut out of its photo exactly as inference will cut it.

Two passes over the labelled tasks, each its own job stage:

1. **downloading**: every task image is fetched through Label Studio (in parallel) into the shared
   image cache; a failed download is counted and the task skipped.
2. **cropping**: each image is decoded (``backend.vision.decode.decode_image``) and each human box with a
   species is cut with ``backend.vision.crop.crop_square`` under the bundle's crop rule, the function the
   backend uses at inference. A task labelled only at image level gets the top MegaDetector animal box
   instead. A corrupt image is counted and skipped, never fatal.

Besides the crop of each human box (``source`` ``human``, or ``detector`` for the top box of a photo
labelled as a whole), the training split also gets, for the same animal:

- ``jitter``: copies cut around the human box rescaled and shifted at random (``trainer.presets.BOX_JITTER``),
  the looseness of a detector's box;
- ``matched``: the crop of MegaDetector's own box for that animal (IoU >= ``DETECTOR_MATCH_IOU``), from the
  prediction the annotator started from or from the detection store (:class:`DetectionLookup`).

``blank`` crops are MegaDetector animal boxes that hold no animal (deleted by the annotator, or on a photo
marked empty: ``trainer.export.blank_boxes``). Crops are written as lossless PNG after the crop rule's first
resize step (``backend.vision.crop.stored_crop``), so evaluation feeds the network exactly what serving does.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from PIL import Image

from backend.contracts.bundle import BLANK_LABEL, Preprocessing
from backend.errors import BackendError, ImageError
from backend.formats.crop_names import source_image
from backend.vision.categories import ANIMAL_CATEGORY
from backend.vision.crop import crop_square, stored_crop
from backend.vision.decode import decode_image
from backend.vision.detector import Detection
from trainer.boxes import BBox, best_match, jitter_box
from trainer.export import DETECTOR_MATCH_IOU, LabeledTask, blank_boxes
from trainer.grouping import capture_time
from trainer.presets import BoxJitter

logger = logging.getLogger(__name__)

#: Seconds between two progress reports of a long pass.
REPORT_EVERY_S = 1.0

#: Downloads a task's image: ``(image reference, task id) -> bytes``.
Fetch = Callable[[str, int], bytes]
#: The top animal box of an image (normalized ``[x, y, w, h]``), or None when there is none.
TopBox = Callable[[Image.Image], BBox | None]
#: Progress callback: ``(done, total)``.
OnProgress = Callable[[int, int], None]

T = TypeVar("T")
R = TypeVar("R")


class DetectionLookup(Protocol):
    """MegaDetector's stored boxes for an image (the detection store), or None when it has none."""

    def __call__(self, image: bytes) -> Sequence[Detection] | None: ...


@dataclass(frozen=True)
class Crop:
    """One training example on disk."""

    path: Path
    label: str
    task_id: int
    location: str | None
    source: str
    """``human``, ``detector`` (top box, image-level label), ``jitter``, ``matched`` or ``blank``."""
    image: str = ""
    """The image reference (the photo it was cut from)."""
    folder: str | None = None
    """The image reference's parent folder (``LabeledTask.folder``)."""
    taken_at: float | None = None
    """EXIF ``DateTimeOriginal`` of the photo, in seconds (camera clock read as UTC)."""
    train_only: bool = False
    """An extra view of an animal already cropped (``jitter``, ``matched``): never validated or tested on."""

    @property
    def photo(self) -> str:
        """The photo's identity across runs: its image reference (the task id when there is none); the crops
        MegaDetector's pipeline cut from one photo (``<photo>___cropNN_...``) share their photo."""
        return source_image(self.image) if self.image else f"task-{self.task_id}"


@dataclass
class CropSet:
    """The crops of a run and what happened to the images they came from."""

    crops: list[Crop] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


def download_images(
    tasks: Sequence[LabeledTask], fetch: Fetch, *, concurrency: int, on_progress: OnProgress
) -> set[int]:
    """Fetch every task image into the cache, in parallel.

    Returns:
        The ids of the tasks whose image could be downloaded.
    """

    def one(task: LabeledTask) -> int | None:
        try:
            fetch(task.image, task.task_id)
        except BackendError as exc:
            logger.warning("task %s: image %s not downloaded: %s", task.task_id, task.image, exc)
            return None
        return task.task_id

    results = _parallel(one, tasks, concurrency, on_progress)
    return {task_id for task_id in results if task_id is not None}


def build_crops(
    tasks: Sequence[LabeledTask],
    fetch: Fetch,
    *,
    out_dir: Path,
    preprocessing: Preprocessing,
    max_pixels: int,
    top_box: TopBox | None,
    concurrency: int,
    on_progress: OnProgress,
    lookup: DetectionLookup | None = None,
    jitter: BoxJitter | None = None,
    min_detection_conf: float = 0.0,
) -> CropSet:
    """Decode each task's (cached) image and write its crops.

    Args:
        tasks: Labelled tasks whose image was downloaded.
        fetch: Returns the image bytes (a cache hit after :func:`download_images`).
        out_dir: Where the PNG crops go (created).
        preprocessing: The bundle's crop rule and input size (crops are stored after the rule's first step).
        max_pixels: Image size limit passed to ``decode_image``.
        top_box: Finds the top MegaDetector animal box, for tasks labelled at image level only;
            None skips those tasks (counted as ``image_level_no_detector``).
        concurrency: Threads decoding and cropping.
        on_progress: Called with ``(done, total)`` now and then.
        lookup: The detection store: MegaDetector's boxes for an image, for matched and blank crops.
        jitter: Jittered copies of each human box for training (None: none).
        min_detection_conf: Detection-store boxes under this confidence are ignored (they were not shown).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    detector_lock = threading.Lock()

    def one(task: LabeledTask) -> tuple[list[Crop], Counter[str]]:
        counts: Counter[str] = Counter()
        try:
            data = fetch(task.image, task.task_id)
            image = decode_image(data, max_pixels=max_pixels)
        except ImageError as exc:
            logger.warning("task %s: skipping corrupt image %s: %s", task.task_id, task.image, exc)
            counts["images_corrupt"] += 1
            return [], counts
        except BackendError as exc:
            logger.warning("task %s: image %s unavailable: %s", task.task_id, task.image, exc)
            counts["images_unavailable"] += 1
            return [], counts
        counts["images_ok"] += 1
        stored = _stored_detections(lookup, data, min_detection_conf)
        views = _views(task, image, stored, top_box, detector_lock, counts)
        views += _jittered(task, views, jitter)
        taken_at = capture_time(data)
        crops = []
        for index, (bbox, label, source) in enumerate(views):
            crop = crop_square(image, bbox, preprocessing.crop)
            if crop is None:
                counts["boxes_empty"] += 1
                continue
            path = out_dir / f"{task.task_id}-{index}.png"
            stored_crop(crop, preprocessing).save(path, compress_level=1)
            train_only = source in TRAIN_ONLY_SOURCES
            crops.append(
                Crop(path, label, task.task_id, task.location, source, task.image, task.folder, taken_at, train_only)
            )
            counts[f"crops_{source}"] += 1
        return crops, counts

    result = CropSet()
    for crops, counts in _parallel(one, tasks, concurrency, on_progress):
        result.crops += crops
        result.counts.update(counts)
    result.crops.sort(key=lambda c: (c.task_id, int(c.path.stem.rpartition("-")[2])))
    logger.info("built %d crops: %s", len(result.crops), dict(result.counts))
    return result


#: Sources of the extra views of an animal, used for training only.
TRAIN_ONLY_SOURCES = frozenset({"jitter", "matched"})

#: One crop to cut: box, label, source.
View = tuple[BBox, str, str]


def _stored_detections(lookup: DetectionLookup | None, data: bytes, min_conf: float) -> list[BBox] | None:
    """The detection store's animal boxes for the image, or None when it has none (or no store)."""
    if lookup is None:
        return None
    found = lookup(data)
    if found is None:
        return None
    animals = sorted((d for d in found if d.category == ANIMAL_CATEGORY and d.conf >= min_conf), key=lambda d: -d.conf)
    return [d.bbox for d in animals]


def _views(
    task: LabeledTask,
    image: Image.Image,
    stored: list[BBox] | None,
    top_box: TopBox | None,
    lock: threading.Lock,
    counts: Counter[str],
) -> list[View]:
    """Human boxes, their matched detector boxes, the top box of an image-level label, the blanks."""
    views: list[View] = [(box.bbox, box.species, "human") for box in task.boxes]
    for box in task.boxes:
        match = box.detector_bbox or (best_match(box.bbox, stored, DETECTOR_MATCH_IOU) if stored else None)
        if match is not None and match != box.bbox:
            views.append((match, box.species, "matched"))
    if not task.boxes and task.image_species is not None:
        views += _detector_box(task, image, stored, top_box, lock, counts)
    blanks = task.blanks
    if task.shown is None and stored is not None and (task.empty or task.from_prediction):
        blanks = blank_boxes(task, stored)
    views += [(bbox, BLANK_LABEL, "blank") for bbox in blanks]
    if task.empty and not blanks:
        counts["empty_no_boxes"] += 1
    return views


def _jittered(task: LabeledTask, views: list[View], jitter: BoxJitter | None) -> list[View]:
    if jitter is None or jitter.copies <= 0:
        return []
    rng = random.Random(task.task_id)
    return [
        (jitter_box(bbox, rng, scale=jitter.scale, shift=jitter.shift), label, "jitter")
        for bbox, label, source in views
        if source == "human"
        for _ in range(jitter.copies)
    ]


def _detector_box(
    task: LabeledTask,
    image: Image.Image,
    stored: list[BBox] | None,
    top_box: TopBox | None,
    lock: threading.Lock,
    counts: Counter[str],
) -> list[View]:
    if stored is not None:  # the store has run the detector on this image: its answer stands
        if not stored:
            counts["image_level_no_detection"] += 1
            return []
        return [(stored[0], task.image_species or "", "detector")]
    if top_box is None:
        counts["image_level_no_detector"] += 1
        return []
    with lock:
        bbox = top_box(image)
    if bbox is None:
        counts["image_level_no_detection"] += 1
        return []
    return [(bbox, task.image_species or "", "detector")]


def _parallel(fn: Callable[[T], R], items: Iterable[T], workers: int, on_progress: OnProgress) -> list[R]:
    """``map(fn, items)`` on a thread pool, in order, reporting progress at most every second."""
    items = list(items)
    results: list[R] = []
    last = 0.0
    on_progress(0, len(items))
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="crops") as pool:
        for done, result in enumerate(pool.map(fn, items), start=1):
            results.append(result)
            if time.monotonic() - last >= REPORT_EVERY_S or done == len(items):
                on_progress(done, len(items))
                last = time.monotonic()
    return results
