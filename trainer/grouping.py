"""Which photos belong together, the way camera traps record them: the units of the held-out split.

A photo's place is its **location** (the first of ``LOCATION_FIELDS`` in the task data) or, without
one, the **folder** its image reference names (local files, cloud storage; uploads have none). Within a
place, photos whose EXIF ``DateTimeOriginal`` lie at most ``SEQUENCE_GAP_S`` apart form a **sequence**
(one trigger's burst, as MegaDetector and Timelapse group episodes); a photo without a capture time is a
unit of its own (**photo**).

A run uses places as units when there are at least :data:`MIN_LOCATIONS` of them (a new camera is
what the test should measure), else sequences. Keys are plain strings, nested left to right:
``location:north``, ``folder:traps/cam1|sequence:2024-05-01T10:00:00``, ``photo:/data/upload/1/x.jpg``.
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol

from PIL import ExifTags, Image

logger = logging.getLogger(__name__)

#: Fewer distinct places than this and a run is split by sequence instead.
MIN_LOCATIONS = 3

LOCATION = "location"
FOLDER = "folder"
SEQUENCE = "sequence"
PHOTO = "photo"
#: EXIF's date-time format.
EXIF_TIME = "%Y:%m:%d %H:%M:%S"


#: Separates the nested parts of a unit key (folder paths may hold ``/``).
SEPARATOR = "|"


class GroupedCrop(Protocol):
    """What grouping reads of a crop (``trainer.crops.Crop``)."""

    @property
    def location(self) -> str | None: ...

    @property
    def folder(self) -> str | None: ...

    @property
    def taken_at(self) -> float | None: ...

    @property
    def photo(self) -> str: ...


def capture_time(data: bytes) -> float | None:
    """EXIF ``DateTimeOriginal`` of an encoded image, in seconds (the camera's clock read as UTC), or None."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            value = image.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal)
    except Exception:  # any unreadable EXIF only means "no capture time"
        return None
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip("\x00 ").strip(), EXIF_TIME).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def place_key(crop: GroupedCrop) -> str | None:
    """``location:<value>``, else ``folder:<path>``, else None."""
    if crop.location:
        return f"{LOCATION}:{crop.location}"
    if crop.folder:
        return f"{FOLDER}:{crop.folder}"
    return None


def photo_key(crop: GroupedCrop) -> str:
    """The photo's own unit, inside its place."""
    return _join(place_key(crop), f"{PHOTO}:{crop.photo}")


def sequence_keys(crops: Iterable[GroupedCrop], gap_s: float) -> dict[str, str]:
    """Photo -> its sequence's key (its photo key when it has no capture time).

    Within a place, photos sorted by capture time chain into one sequence while each follows the
    previous one by at most ``gap_s`` seconds; the key is the place plus the first photo's time.
    """
    by_place: dict[str | None, dict[str, float]] = defaultdict(dict)
    keys: dict[str, str] = {}
    for crop in crops:
        if crop.taken_at is None:
            keys[crop.photo] = photo_key(crop)
        else:
            by_place[place_key(crop)][crop.photo] = crop.taken_at
    for place, photos in by_place.items():
        start: float | None = None
        previous: float | None = None
        for photo, taken in sorted(photos.items(), key=lambda item: (item[1], item[0])):
            if previous is None or taken - previous > gap_s:
                start = taken
            previous = taken
            assert start is not None
            stamp = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            keys[photo] = _join(place, f"{SEQUENCE}:{stamp}")
    return keys


def unit_kind(key: str) -> str:
    """The kind of a unit key: ``location``, ``folder``, ``sequence`` or ``photo`` (its last part)."""
    return key.rsplit(SEPARATOR, 1)[-1].split(":", 1)[0]


def _join(place: str | None, part: str) -> str:
    return f"{place}{SEPARATOR}{part}" if place else part
