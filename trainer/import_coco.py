"""``camtrap import-coco``: a COCO Camera Traps file (Animl's export, a LILA dataset) into a training folder or
a Label Studio project.

Per image (:func:`plan_images`), after the label spec (if any) has translated the categories:

- every annotation with a box is a crop of that box (absolute pixels in the file, normalised with the
  image's ``width``/``height``, or the file's own size when the COCO file does not give them);
- an image labelled without a box gets MegaDetector's top animal box (``DETECTOR_MODEL``, at or above
  ``CLASSIFY_THRESHOLD``); none found: counted, left out;
- "empty" images (``backend.formats.coco.is_empty``) are counted and left out, or with ``--keep-empty`` kept
  as the class ``empty`` (the whole frame);
- an image missing under ``--images`` or unreadable is listed, not fatal.

``-o BASE`` writes ``BASE/crops/`` (MegaDetector's names: ``<file_name>___crop<NN>.jpg`` for a box of the
file, ``<file_name>___crop00_<detector>.jpg`` for the detector's) and ``BASE/labels.csv`` with each image's
location, ready for ``camtrap train BASE``. The crops are cut by ``backend.vision.crop.crop_square``, as
everywhere. Crops are written to a staging folder renamed into place at the end, then ``labels.csv``.

``--project N`` creates one Label Studio task per image with its labels as an annotation (rectangles and
per-region species, or the image-level species), in one import request, so training can start at once.
Every label must be one of the project's species choices, checked before anything is sent.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image

from backend.errors import FileFormatError, ImageError
from backend.formats.coco import EMPTY, CocoAnnotation, CocoDataset, CocoImage, is_empty, relative_box
from backend.formats.crop_names import md_crop_name
from backend.formats.label_spec import LabelSpec
from backend.formats.labels_csv import LabelRow, write_labels_csv
from backend.labelstudio.label_config import ImageOutcome, LabelMapping, read_label_config
from backend.vision.crop import crop_square
from backend.vision.decode import decode_image
from trainer.crops import TopBox
from trainer.errors import FolderLayoutError, TrainerError
from trainer.folder import CROPS_DIR, LABELS_CSV, WHOLE_IMAGE

logger = logging.getLogger(__name__)

#: JPEG quality of the crops written (MegaDetector's ``create_crop_folder`` uses 95).
JPEG_QUALITY = 95
#: Tasks per Label Studio import request.
IMPORT_BATCH = 500


@dataclass(frozen=True)
class PlannedLabel:
    """One label of one image: a box of the file (normalised later), the detector's box, or the whole frame."""

    label: str
    index: int
    annotation: CocoAnnotation | None
    source: str
    """``human`` (a box of the file), ``detector`` (no box: the top MegaDetector box), ``empty``."""


@dataclass
class ImportReport:
    """What an import did, printed as JSON."""

    images: int = 0
    images_labelled: int = 0
    images_empty: int = 0
    images_without_annotation: int = 0
    images_missing: list[str] = field(default_factory=list)
    images_unreadable: list[dict[str, str]] = field(default_factory=list)
    crops: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    """Labels left out, by reason (label spec, no detection...)."""
    tasks_created: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("crops", "labels", "dropped"):
            data[key] = dict(sorted(getattr(self, key).items()))
        return data


def plan_images(
    dataset: CocoDataset, *, spec: LabelSpec | None, keep_empty: bool, seed: int = 0
) -> tuple[dict[str, list[PlannedLabel]], ImportReport]:
    """Per image id, the labels to make (after the label spec and ``max_count``), and the counts so far."""
    report = ImportReport(images=len(dataset.images))
    plans: dict[str, list[PlannedLabel]] = {}
    for image_id, of_image in dataset.annotations_of().items():
        image = dataset.images[image_id]
        if not of_image:
            report.images_without_annotation += 1
            continue
        species = [(i, a) for i, a in enumerate(of_image) if not is_empty(a, image)]
        if not species:
            report.images_empty += 1
            if keep_empty:
                plans[image_id] = [PlannedLabel(EMPTY, 0, None, "empty")]
            continue
        planned = []
        for index, annotation in species:
            label = spec.translate(annotation.category) if spec else annotation.category
            if label is None:
                assert spec is not None
                report.dropped[f"label_{spec.drop_reason(annotation.category)}"] += 1
                continue
            has_box = annotation.bbox is not None or annotation.bbox_relative is not None
            planned.append(
                PlannedLabel(label, index, annotation if has_box else None, "human" if has_box else "detector")
            )
        if any(p.source == "human" for p in planned):
            planned = [p for p in planned if p.source == "human"]
        elif planned:
            planned = planned[:1]  # image-level labels: one top box per image
        if planned:
            plans[image_id] = planned
    if spec is not None:
        ids = sorted(plans)
        kept = spec.cap([plans[i][0].label if plans[i][0].source != "empty" else None for i in ids], seed=seed)
        for image_id, label in zip(ids, kept, strict=True):
            if label is None and plans[image_id][0].source != "empty":
                report.dropped["label_over_max_count"] += len(plans.pop(image_id))
    return plans, report


def import_to_folder(
    dataset: CocoDataset,
    images_dir: Path,
    base: Path,
    *,
    spec: LabelSpec | None,
    keep_empty: bool,
    max_pixels: int,
    top_box: TopBox | None,
    detector_name: str,
    load_top_box: Callable[[], TopBox] | None = None,
) -> ImportReport:
    """Write ``BASE/crops/`` and ``BASE/labels.csv`` (see the module docstring).

    Args:
        top_box: The top-animal-box finder; None builds one with ``load_top_box()`` the first time an image
            needs it (most files have boxes and never load the detector).

    Raises:
        FolderLayoutError: ``BASE`` already holds crops or a labels.csv, or no crop could be made.
    """
    crops_dir, table = base / CROPS_DIR, base / LABELS_CSV
    if (crops_dir.exists() and any(crops_dir.iterdir())) or table.exists():
        raise FolderLayoutError(f"{base} already holds {CROPS_DIR}/ or {LABELS_CSV}: give a new folder to -o")
    plans, report = plan_images(dataset, spec=spec, keep_empty=keep_empty)
    staging = base / f".{CROPS_DIR}.import-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    rows: list[LabelRow] = []
    try:
        for image_id in sorted(plans, key=lambda i: dataset.images[i].file_name):
            image = dataset.images[image_id]
            photo = _open(images_dir, image, max_pixels, report)
            if photo is None:
                continue
            report.images_labelled += 1
            for planned in plans[image_id]:
                if planned.source == "detector" and top_box is None and load_top_box is not None:
                    top_box = load_top_box()
                box, name = _box_and_name(planned, image, photo, top_box, detector_name, report)
                if box is None:
                    continue
                crop = crop_square(photo, box)
                if crop is None:
                    report.dropped["box_empty"] += 1
                    continue
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                crop.save(target, format="JPEG", quality=JPEG_QUALITY)
                rows.append(LabelRow(0, name, planned.label, image.location))
                report.crops[planned.source] += 1
                report.labels[planned.label] += 1
        if not rows:
            raise FolderLayoutError(
                f"{dataset.path}: no labelled crop could be made from {report.images} images (missing under "
                f"{images_dir}: {len(report.images_missing)}, empty: {report.images_empty}); check --images"
            )
        if crops_dir.exists():
            crops_dir.rmdir()
        staging.rename(crops_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_labels_csv(table, rows)
    return report


def _open(images_dir: Path, image: CocoImage, max_pixels: int, report: ImportReport) -> Image.Image | None:
    path = images_dir / image.file_name
    if not path.is_file():
        report.images_missing.append(image.file_name)
        return None
    try:
        return decode_image(path.read_bytes(), max_pixels=max_pixels)
    except (OSError, ImageError) as exc:
        report.images_unreadable.append({"file": image.file_name, "reason": str(exc)})
        logger.warning("%s: %s", path, exc)
        return None


def _box_and_name(
    planned: PlannedLabel,
    image: CocoImage,
    photo: Image.Image,
    top_box: TopBox | None,
    detector_name: str,
    report: ImportReport,
) -> tuple[tuple[float, float, float, float] | None, str]:
    if planned.source == "empty":
        return WHOLE_IMAGE, md_crop_name(image.file_name, 0, None, ground_truth=True)
    if planned.source == "human":
        assert planned.annotation is not None
        width, height = image.width or photo.width, image.height or photo.height
        box = relative_box(planned.annotation, width, height)
        if box is None:
            report.dropped["box_empty"] += 1
        return box, md_crop_name(image.file_name, planned.index, None, ground_truth=True)
    if top_box is None:
        report.dropped["no_detector"] += 1
        return None, ""
    found = top_box(photo)
    if found is None:
        report.dropped["no_detection"] += 1
    return found, md_crop_name(image.file_name, 0, detector_name)


# --- into a Label Studio project -------------------------------------------------------------------------


def project_tasks(
    dataset: CocoDataset,
    plans: dict[str, list[PlannedLabel]],
    mapping: LabelMapping,
    *,
    images_dir: Path,
    image_url: str,
    document_root: Path,
    report: ImportReport,
) -> list[dict[str, Any]]:
    """Label Studio tasks (data + one annotation each) for the planned images.

    Raises:
        FileFormatError: a label is not one of the project's species choices (or the project cannot hold it).
    """
    _check_labels(dataset, plans, mapping)
    tasks = []
    for image_id in sorted(plans, key=lambda i: dataset.images[i].file_name):
        image = dataset.images[image_id]
        path = images_dir / image.file_name
        if not path.is_file():
            report.images_missing.append(image.file_name)
            continue
        width, height = image.width, image.height
        if width is None or height is None:
            try:
                with Image.open(path) as header:
                    width, height = header.size
            except OSError as exc:
                report.images_unreadable.append({"file": image.file_name, "reason": str(exc)})
                continue
        result = _result(plans[image_id], mapping, width, height, report)
        if not result:
            continue
        data: dict[str, Any] = {
            mapping.image_key: _reference(path, image_url, document_root),
            "coco_image_id": image_id,
        }
        if image.location:
            data["location"] = image.location
        if image.datetime:
            data["datetime"] = image.datetime
        tasks.append({"data": data, "annotations": [{"result": result, "ground_truth": False}]})
        report.images_labelled += 1
        for planned in plans[image_id]:
            report.labels[planned.label] += 1
    return tasks


def _check_labels(dataset: CocoDataset, plans: dict[str, list[PlannedLabel]], mapping: LabelMapping) -> None:
    for image_id, planned in plans.items():
        for item in planned:
            if item.source == "empty":
                if mapping.image_choice_from_name is None or mapping.outcome_value(ImageOutcome.EMPTY) is None:
                    raise FileFormatError(
                        f"{dataset.path}: image {image_id} is empty, but the project has no image-level 'empty' "
                        "choice; leave out --keep-empty or add one"
                    )
                continue
            if item.source == "detector" and mapping.image_species_from_name is None:
                where = "a box" if mapping.box_from_name else "no rectangles"
                raise FileFormatError(
                    f"{dataset.path}: image {image_id} is labelled {item.label!r} without a box, and the project has "
                    f"no image-level species choice ({where}); add one to the labeling config"
                )
            value = mapping.species_value(item.label) or mapping.image_species_value(item.label)
            if value is None:
                known = sorted(set(mapping.species_values.values()) | set(mapping.image_species_values.values()))
                raise FileFormatError(
                    f"{dataset.path}: label {item.label!r} (image {image_id}) is not a species of the project; "
                    f"expected one of {', '.join(known) or '(none: the config has no species choices)'}"
                )


def _result(
    planned: Sequence[PlannedLabel], mapping: LabelMapping, width: int, height: int, report: ImportReport
) -> list[dict[str, Any]]:
    from backend.labelstudio.predictions import ls_prediction
    from backend.vision.classifier import Prediction
    from backend.vision.detector import Detection
    from backend.vision.pipeline import Box
    from backend.vision.thresholds import Thresholds

    if planned[0].source == "empty":
        value = mapping.outcome_value(ImageOutcome.EMPTY)
        return [_choice("coco-empty", mapping.image_choice_from_name, mapping.image_name, value)]
    if planned[0].source == "detector":
        value = mapping.image_species_value(planned[0].label)
        return [_choice("coco-species", mapping.image_species_from_name, mapping.image_name, value)]
    boxes = []
    for item in planned:
        assert item.annotation is not None
        box = relative_box(item.annotation, width, height)
        if box is None:
            report.dropped["box_empty"] += 1
            continue
        boxes.append(Box(Detection("1", 1.0, box), Prediction(item.label, 1.0)))
    if not boxes:
        return []
    everything = Thresholds(detection=0.0, classify=0.0, show=0.0, species=0.0)
    # the prediction format's own writer, so the annotation reads back exactly as our predictions do
    result = ls_prediction(boxes, mapping, width, height, "coco-import", everything)["result"]
    if mapping.species_from_name is None and mapping.image_species_from_name is not None:
        value = mapping.image_species_value(planned[0].label)
        result.append(_choice("coco-species", mapping.image_species_from_name, mapping.image_name, value))
    return [{k: v for k, v in item.items() if k != "score"} for item in result]


def _choice(region: str, from_name: str | None, to_name: str | None, value: str | None) -> dict[str, Any]:
    return {"id": region, "type": "choices", "from_name": from_name, "to_name": to_name, "value": {"choices": [value]}}


def _reference(path: Path, image_url: str, document_root: Path) -> str:
    try:
        relative = path.resolve().relative_to(document_root.resolve()).as_posix()
    except ValueError as exc:
        raise TrainerError(f"{path} is not under --document-root {document_root}") from exc
    return f"{image_url}{quote(relative)}"


def import_to_project(client: Any, project: str, tasks: list[dict[str, Any]], report: ImportReport) -> None:
    """POST the tasks to ``/api/projects/<id>/import`` in batches; ``report.tasks_created`` counts them.

    Raises:
        LabelStudioError: Label Studio refused a batch (the tasks of earlier batches stay: the message says how many).
    """
    from backend.errors import LabelStudioError

    for start in range(0, len(tasks), IMPORT_BATCH):
        batch = tasks[start : start + IMPORT_BATCH]
        try:
            answer = client.post_json(f"/api/projects/{project}/import", batch)
        except LabelStudioError as exc:
            raise LabelStudioError(
                f"{exc} ({report.tasks_created} of {len(tasks)} tasks were created before this batch)"
            ) from exc
        report.tasks_created += int((answer or {}).get("task_count", len(batch)))


def read_project_mapping(client: Any, project: str) -> LabelMapping:
    """The project's labeling config, read by the one config reader."""
    config = (client.get_json(f"/api/projects/{project}") or {}).get("label_config") or ""
    return read_label_config(config)
