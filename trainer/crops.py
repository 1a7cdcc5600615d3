"""The crop dataset: every labelled animal cut out of its photo exactly as inference will cut it.

Two passes over the labelled tasks, each its own job stage:

1. **downloading**: every task image is fetched through Label Studio (in parallel) into the shared
   image cache; a failed download is counted and the task skipped.
2. **cropping**: each image is decoded (``backend.vision.decode.decode_image``) and each human box with a
   species is cut with ``backend.vision.crop.crop_square``, the function the backend uses at inference.
   A task labelled only at image level gets the top MegaDetector animal box instead. A corrupt image
   is counted and skipped, never fatal.

Crops are written as lossless PNG under the run directory, downscaled to at most
``TrainConfig.max_crop_side`` (the network sees ``input_size`` anyway).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from PIL import Image

from backend.errors import BackendError, ImageError
from backend.vision.crop import crop_square
from backend.vision.decode import decode_image
from trainer.export import LabeledTask

logger = logging.getLogger(__name__)

#: Seconds between two progress reports of a long pass.
REPORT_EVERY_S = 1.0

BBox = tuple[float, float, float, float]
#: Downloads a task's image: ``(image reference, task id) -> bytes``.
Fetch = Callable[[str, int], bytes]
#: The top animal box of an image (normalized ``[x, y, w, h]``), or None when there is none.
TopBox = Callable[[Image.Image], BBox | None]
#: Progress callback: ``(done, total)``.
OnProgress = Callable[[int, int], None]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Crop:
    """One training example on disk."""

    path: Path
    label: str
    task_id: int
    location: str | None
    source: str
    """``human`` (an annotator's box) or ``detector`` (top MegaDetector box, image-level label)."""


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
    max_side: int,
    max_pixels: int,
    top_box: TopBox | None,
    concurrency: int,
    on_progress: OnProgress,
) -> CropSet:
    """Decode each task's (cached) image and write its crops.

    Args:
        tasks: Labelled tasks whose image was downloaded.
        fetch: Returns the image bytes (a cache hit after :func:`download_images`).
        out_dir: Where the PNG crops go (created).
        max_side: Crops larger than this are downscaled to it.
        max_pixels: Image size limit passed to ``decode_image``.
        top_box: Finds the top MegaDetector animal box, for tasks labelled at image level only;
            None skips those tasks (counted as ``no_detector``).
        concurrency: Threads decoding and cropping.
        on_progress: Called with ``(done, total)`` now and then.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    detector_lock = threading.Lock()

    def one(task: LabeledTask) -> tuple[list[Crop], Counter[str]]:
        counts: Counter[str] = Counter()
        try:
            image = decode_image(fetch(task.image, task.task_id), max_pixels=max_pixels)
        except ImageError as exc:
            logger.warning("task %s: skipping corrupt image %s: %s", task.task_id, task.image, exc)
            counts["images_corrupt"] += 1
            return [], counts
        except BackendError as exc:
            logger.warning("task %s: image %s unavailable: %s", task.task_id, task.image, exc)
            counts["images_unavailable"] += 1
            return [], counts
        counts["images_ok"] += 1
        labelled = [(box.bbox, box.species, "human") for box in task.boxes]
        if not labelled and task.image_species is not None:
            labelled = _detector_box(task, image, top_box, detector_lock, counts)
        crops = []
        for index, (bbox, label, source) in enumerate(labelled):
            crop = crop_square(image, bbox)
            if crop is None:
                counts["boxes_empty"] += 1
                continue
            path = out_dir / f"{task.task_id}-{index}.png"
            _shrink(crop, max_side).save(path, compress_level=1)
            crops.append(Crop(path, label, task.task_id, task.location, source))
            counts[f"crops_{source}"] += 1
        return crops, counts

    result = CropSet()
    for crops, counts in _parallel(one, tasks, concurrency, on_progress):
        result.crops += crops
        result.counts.update(counts)
    result.crops.sort(key=lambda c: c.path.name)
    logger.info("built %d crops: %s", len(result.crops), dict(result.counts))
    return result


def _detector_box(
    task: LabeledTask, image: Image.Image, top_box: TopBox | None, lock: threading.Lock, counts: Counter[str]
) -> list[tuple[BBox, str, str]]:
    if top_box is None:
        counts["image_level_no_detector"] += 1
        return []
    with lock:
        bbox = top_box(image)
    if bbox is None:
        counts["image_level_no_detection"] += 1
        return []
    return [(bbox, task.image_species or "", "detector")]


def _shrink(crop: Image.Image, max_side: int) -> Image.Image:
    if crop.width <= max_side:
        return crop
    return crop.resize((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=3.0)


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
