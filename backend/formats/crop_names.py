"""File names of detection crops, as MegaDetector's classification pipeline writes and reads them.

``megadetector.classification.crop_detections`` names the crop of detection ``i`` of image ``file``
``<file>___crop<ii>_<info.detector>.jpg`` (``ii`` two digits, the detection's index in the image's list, so
skipped boxes still use up an index; ``<info.detector>`` verbatim, ``unknown`` when absent), and a
ground-truth box ``<file>___crop<ii>.jpg``. Its ``merge_classification_detection_output`` maps a crop back
with ``path.split('___crop')`` and ``int(suffix[:2])``. Reference: ``../shared/docs/user-formats.md`` §3.4.
"""

from __future__ import annotations

from pathlib import PurePosixPath

#: The separator between the image's path and the crop suffix.
CROP_SEPARATOR = "___crop"
#: ``info.detector`` when a results file names none.
UNKNOWN_DETECTOR = "unknown"


def md_crop_name(file: str, index: int, detector: str | None, *, ground_truth: bool = False) -> str:
    """The crop's path relative to the crops folder: ``<file>___crop<ii>_<detector>.jpg``."""
    if ground_truth:
        return f"{file}{CROP_SEPARATOR}{index:02d}.jpg"
    return f"{file}{CROP_SEPARATOR}{index:02d}_{detector or UNKNOWN_DETECTOR}.jpg"


def parse_crop_name(path: str) -> tuple[str, int] | None:
    """``(image file, detection index)`` of a MegaDetector crop name, or None for another name."""
    image, separator, suffix = str(path).replace("\\", "/").partition(CROP_SEPARATOR)
    if not separator or len(suffix) < 2 or not suffix[:2].isdigit():
        return None
    return image, int(suffix[:2])


def source_image(path: str) -> str:
    """The photo a crop was cut from (its own path when it is not a MegaDetector crop name)."""
    parsed = parse_crop_name(path)
    return parsed[0] if parsed else str(PurePosixPath(str(path).replace("\\", "/")))
