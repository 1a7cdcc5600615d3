"""Square crops of a MegaDetector results file, as MegaDetector's classification pipeline cuts them.

What ``python -m megadetector.classification.crop_detections results.json CROPS --square-crops -t T`` does,
with the crop function the service and the trainer use (``backend.vision.crop.crop_square``, pinned to
megadetector's ``save_crop`` pixel for pixel by the tests):

- only ``animal`` detections with ``conf >= threshold``; zero-size boxes skipped;
- the crop of detection ``i`` of ``images[].file`` is ``CROPS/<file>___crop<ii>_<info.detector>.jpg``
  (:func:`backend.formats.crop_names.md_crop_name`), sub-folders mirrored, an RGB JPEG at Pillow's default
  quality; a crop already there is not made again (a second run resumes);
- an image that cannot be read is reported and skipped, never fatal; images marked failed in the file
  (``detections: null``) are counted.

One difference, on purpose: the photo is decoded with its EXIF orientation applied, as MegaDetector's
detector (and ours) saw it when it placed the boxes (``crop_detections`` opens it unrotated).

The results file is read with ``json`` and checked with megadetector's own
``validate_batch_results`` (a small reader kept here; the MegaDetector JSON reader of ``backend.formats``
grows in another branch).
"""

from __future__ import annotations

import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image
from tqdm import tqdm

from backend.errors import FileFormatError, ImageError
from backend.formats.atomic import atomic_target
from backend.formats.crop_names import UNKNOWN_DETECTOR, md_crop_name
from backend.vision.crop import SQUARE, crop_square
from backend.vision.decode import decode_image

logger = logging.getLogger(__name__)

ANIMAL = "animal"


@dataclass
class CropReport:
    """What a run did, printed as JSON at the end."""

    images: int = 0
    crops_written: int = 0
    crops_existing: int = 0
    boxes_empty: int = 0
    images_without_detections: list[str] = field(default_factory=list)
    """Images the results file marks as failed (``detections: null``)."""
    images_failed: list[dict[str, str]] = field(default_factory=list)
    """``{"file", "reason"}`` of each image that could not be read here."""


def read_md_results(path: Path) -> dict[str, Any]:
    """A MegaDetector batch results file, checked by megadetector's ``validate_batch_results``.

    Raises:
        FileFormatError: not JSON, or not a results file (the validator's first error).
    """
    from megadetector.postprocessing.validate_batch_results import validate_batch_results

    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise FileFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path} is not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    errors = validate_batch_results(results)["validation_results"]["errors"]
    if errors:
        raise FileFormatError(
            f"{path} is not a MegaDetector results file: {errors[0]} (expected the batch output format, "
            "with info, detection_categories and images)"
        )
    return results


def crop_detections(
    results: dict[str, Any],
    crops_dir: Path,
    images_root: Path,
    *,
    threshold: float,
    max_pixels: int,
    threads: int = 4,
    progress: bool = True,
) -> CropReport:
    """Write the square crops of every animal detection at or above ``threshold``.

    Args:
        results: A MegaDetector results document (:func:`read_md_results`).
        crops_dir: The crops folder (created).
        images_root: The folder relative ``images[].file`` paths start from.
        threshold: Lowest detection confidence cropped.
        max_pixels: Largest photo decoded (``MAX_IMAGE_PIXELS``).
        threads: Photos decoded and cropped in parallel.
        progress: Show a progress bar on stderr.
    """
    detector = (results.get("info") or {}).get("detector") or UNKNOWN_DETECTOR
    categories = {str(k): str(v) for k, v in results["detection_categories"].items()}
    report = CropReport()
    images = sorted(results["images"], key=lambda im: str(im["file"]))
    report.images = len(images)

    def one(image: dict[str, Any]) -> dict[str, Any]:
        return _crop_image(image, crops_dir, images_root, detector, categories, threshold, max_pixels)

    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="crops") as pool:
        bar = tqdm(total=len(images), unit="image", desc="cropping", disable=not progress, file=sys.stderr)
        for outcome in pool.map(one, images):
            bar.update(1)
            if outcome.get("missing"):
                report.images_without_detections.append(outcome["file"])
            if outcome.get("failure"):
                report.images_failed.append({"file": outcome["file"], "reason": outcome["failure"]})
                logger.warning("%s: %s", outcome["file"], outcome["failure"])
            report.crops_written += outcome.get("written", 0)
            report.crops_existing += outcome.get("existing", 0)
            report.boxes_empty += outcome.get("empty", 0)
        bar.close()
    return report


def _crop_image(
    image: dict[str, Any],
    crops_dir: Path,
    images_root: Path,
    detector: str,
    categories: dict[str, str],
    threshold: float,
    max_pixels: int,
) -> dict[str, Any]:
    file = str(image["file"])
    detections = image.get("detections")
    if detections is None:
        return {"file": file, "missing": True}
    relative = _relative_file(file, images_root)
    targets = {
        index: crops_dir / md_crop_name(relative, index, detector)
        for index, det in enumerate(detections)
        if categories.get(str(det.get("category"))) == ANIMAL and float(det.get("conf", 1.0)) >= threshold
    }
    todo = {index: path for index, path in targets.items() if not path.exists()}
    outcome: dict[str, Any] = {"file": file, "existing": len(targets) - len(todo)}
    if not todo:
        return outcome
    source = Path(file) if Path(file).is_absolute() else images_root / file
    try:
        photo = decode_image(source.read_bytes(), max_pixels=max_pixels)
    except OSError as exc:
        return {**outcome, "failure": f"cannot read {source}: {exc.strerror or exc}"}
    except ImageError as exc:
        return {**outcome, "failure": f"{source}: {exc}"}
    written = empty = 0
    for index, path in todo.items():
        crop = crop_square(photo, detections[index]["bbox"], SQUARE)  # MegaDetector's --square-crops rule
        if crop is None:
            empty += 1
            continue
        _save_jpeg(crop, path)
        written += 1
    return {**outcome, "written": written, "empty": empty}


def _relative_file(file: str, images_root: Path) -> str:
    """``images[].file`` as a path under the crops folder: relative as given, absolute made relative."""
    posix = file.replace("\\", "/")
    path = Path(posix)
    if not path.is_absolute():
        return posix
    try:
        return path.relative_to(images_root.resolve()).as_posix()
    except ValueError:
        return PurePosixPath(posix).relative_to(PurePosixPath(posix).anchor).as_posix()


def _save_jpeg(crop: Image.Image, path: Path) -> None:
    """``crop.save(path)`` as megadetector does (JPEG, Pillow's defaults), through a temporary file."""
    with atomic_target(path) as tmp:
        crop.save(tmp, format="JPEG")
