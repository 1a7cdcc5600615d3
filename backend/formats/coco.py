"""COCO Camera Traps (CCT), as LILA's datasets and Animl's export write it: read for import, written for export.

Reference: ``../shared/docs/user-formats.md`` §4. What the reader holds to:

- ``images[]`` need ``id`` and ``file_name``; ``width``, ``height``, ``location`` (a string, or an int in old
  sets), ``datetime`` (Animl: ISO-8601 with an offset) and ``seq_id`` are kept when present;
- ``annotations[]`` need ``image_id`` and ``category_id``; ``bbox`` is ``[x, y, w, h]`` in **absolute** pixels
  (Animl rounds them to ints, and writes ``null`` when the image size was unknown); ``bbox_relative`` is the
  normalised form; extra keys (``confidence``, ``validated``...) are ignored;
- categories are mapped **by name**: Animl numbers them in the project's label order;
- "empty" is an annotation of the category named ``empty`` (or id 0 when it has no name), with no box (the
  spec) or Animl's full-frame box: :func:`is_empty`; an image may have no annotation at all.

A truncated file (Animl's streamed export of more than 18 000 images can end early) is refused with the line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.errors import FileFormatError
from backend.formats.atomic import write_json_atomically

#: The category name of an empty image (category 0 by convention).
EMPTY = "empty"


@dataclass(frozen=True)
class CocoImage:
    id: str
    file_name: str
    width: int | None = None
    height: int | None = None
    location: str | None = None
    datetime: str | None = None
    seq_id: str | None = None


@dataclass(frozen=True)
class CocoAnnotation:
    id: str
    image_id: str
    category: str
    """The category's name (as the file spells it)."""
    bbox: tuple[float, float, float, float] | None = None
    """Absolute ``[x, y, w, h]`` pixels, or None (no box, or Animl's ``null``)."""
    bbox_relative: tuple[float, float, float, float] | None = None


@dataclass
class CocoDataset:
    """A CCT file: images by id, annotations in file order, category names by id."""

    path: str
    images: dict[str, CocoImage] = field(default_factory=dict)
    annotations: list[CocoAnnotation] = field(default_factory=list)
    categories: dict[int, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def annotations_of(self) -> dict[str, list[CocoAnnotation]]:
        """Image id -> its annotations (every image present, possibly with none)."""
        by_image: dict[str, list[CocoAnnotation]] = {image_id: [] for image_id in self.images}
        for annotation in self.annotations:
            by_image[annotation.image_id].append(annotation)
        return by_image


def read_coco(path: Path) -> CocoDataset:
    """Read a COCO Camera Traps file.

    Raises:
        FileFormatError: not JSON (the line; truncated exports say so), a required key is missing, or an
            annotation names an unknown image or category (its index in ``annotations``).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FileFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path} is not UTF-8 text ({exc.reason})") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (the file ends early: export it again)" if exc.pos >= len(text.rstrip()) else ""
        raise FileFormatError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg}){hint}") from exc
    return parse_coco(raw, str(path))


def parse_coco(raw: Any, source: str) -> CocoDataset:
    """A CCT document already loaded from JSON.

    Raises:
        FileFormatError: see :func:`read_coco`.
    """
    if not isinstance(raw, dict):
        raise FileFormatError(f"{source}: expected a COCO Camera Traps object with images, annotations, categories")
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(raw.get(key), list)]
    if missing:
        raise FileFormatError(
            f"{source}: expected a COCO Camera Traps file; the list(s) {', '.join(missing)} are missing"
        )
    info = raw.get("info")
    dataset = CocoDataset(source, info=info if isinstance(info, dict) else {})
    for index, category in enumerate(raw["categories"]):
        if not isinstance(category, dict) or not isinstance(category.get("id"), int):
            raise FileFormatError(f"{source}: categories[{index}] needs an integer id and a name")
        name = str(category.get("name") or "").strip() or EMPTY
        dataset.categories[category["id"]] = name
    for index, image in enumerate(raw["images"]):
        if not isinstance(image, dict) or image.get("id") is None or not image.get("file_name"):
            raise FileFormatError(f"{source}: images[{index}] needs an id and a file_name")
        image_id = str(image["id"])
        dataset.images[image_id] = CocoImage(
            image_id,
            str(image["file_name"]).replace("\\", "/"),
            _int_or_none(image.get("width")),
            _int_or_none(image.get("height")),
            _text_or_none(image.get("location")),
            _text_or_none(image.get("datetime")),
            _text_or_none(image.get("seq_id")),
        )
    for index, annotation in enumerate(raw["annotations"]):
        where = f"{source}: annotations[{index}]"
        if not isinstance(annotation, dict):
            raise FileFormatError(f"{where} is not an object")
        image_id = str(annotation.get("image_id"))
        if image_id not in dataset.images:
            raise FileFormatError(f"{where} names image {annotation.get('image_id')!r}, which is not in images")
        category_id = annotation.get("category_id")
        if category_id not in dataset.categories:
            known = ", ".join(f"{i} ({n})" for i, n in sorted(dataset.categories.items()))
            raise FileFormatError(f"{where} has category_id {category_id!r}; expected one of {known}")
        dataset.annotations.append(
            CocoAnnotation(
                str(annotation.get("id", index)),
                image_id,
                dataset.categories[category_id],
                _box(annotation.get("bbox"), where, "bbox"),
                _box(annotation.get("bbox_relative"), where, "bbox_relative"),
            )
        )
    return dataset


def is_empty(annotation: CocoAnnotation, image: CocoImage) -> bool:
    """An "empty" annotation: category ``empty``, with no box or Animl's full-frame one."""
    return annotation.category.casefold() == EMPTY


def relative_box(annotation: CocoAnnotation, width: int, height: int) -> tuple[float, float, float, float] | None:
    """The annotation's box normalised to the image (MegaDetector's ``[x, y, w, h]``), clipped; None if none."""
    if annotation.bbox_relative is not None:
        x, y, w, h = annotation.bbox_relative
    elif annotation.bbox is not None and width > 0 and height > 0:
        bx, by, bw, bh = annotation.bbox
        x, y, w, h = bx / width, by / height, bw / width, bh / height
    else:
        return None
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(1.0, x + w), min(1.0, y + h)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def coco_document(
    images: Sequence[dict[str, Any]],
    annotations: Sequence[dict[str, Any]],
    categories: Sequence[str],
    *,
    description: str,
    version: str = "1.0",
) -> dict[str, Any]:
    """A CCT document: ``empty`` gets id 0, the other categories 1..n in the given order; image and annotation
    dicts are written as given, each annotation's ``category`` name replaced by its ``category_id``."""
    ids = {name: i for i, name in enumerate((n for n in categories if n != EMPTY), start=1)}
    if EMPTY in categories:
        ids = {EMPTY: 0, **ids}
    out_annotations = []
    for annotation in annotations:
        entry = dict(annotation)
        entry["category_id"] = ids[entry.pop("category")]
        out_annotations.append(entry)
    return {
        "info": {"version": version, "description": description},
        "images": list(images),
        "annotations": out_annotations,
        "categories": [{"id": i, "name": name} for name, i in ids.items()],
    }


def write_coco(path: Path, document: dict[str, Any]) -> Path:
    """Write a CCT document atomically (indent 1)."""
    return write_json_atomically(path, document, indent=1)


def _box(value: Any, where: str, key: str) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 4:
        raise FileFormatError(f"{where}: {key} must be [x, y, width, height], got {value!r}")
    if any(v is None for v in value):
        return None
    try:
        x, y, w, h = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise FileFormatError(f"{where}: {key} must hold four numbers, got {value!r}") from exc
    return (x, y, w, h)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _text_or_none(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None
