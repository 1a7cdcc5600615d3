"""Export a project's human annotations from Label Studio, the source of truth, into labelled tasks.

One Label Studio JSON export (``GET /api/projects/<id>/export?exportType=JSON``, annotated tasks
only) becomes a list of :class:`LabeledTask`: the image reference, the task's location (the first of
``location_fields`` present in the task data), boxes with a species or an image-level species, and
what is known of blank boxes.

Which annotation of a task is used: not cancelled (skips), ground truth first, then the most recently
updated. Which controls hold the species is decided by the one labeling-config reader,
``backend.labelstudio.label_config.read_label_config``, that serving uses too (see :func:`parse_labels`);
every value is mapped onto the config's choices, and values it does not know are counted and left out.

Blank boxes need the MegaDetector boxes the annotator was shown: the JSON export lists a task's
predictions by id only, so the job reads them with ``GET /api/predictions/?project=<id>`` and takes
the one each annotation names as its ``parent_prediction`` (Label Studio's editor sets it when an
annotation starts from a prediction).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from backend.errors import BackendError, LabelConfigError
from backend.labelstudio.label_config import ImageOutcome, LabelMapping, read_label_config
from backend.labelstudio.references import reference_path
from backend.vision.categories import ANIMAL_CATEGORY
from trainer.boxes import BBox, best_match, ls_rectangle
from trainer.errors import ExportError

if TYPE_CHECKING:
    from backend.formats.label_spec import LabelSpec

logger = logging.getLogger(__name__)

#: A detector box is the same animal as a human box from this IoU on (its crop is trained on too).
DETECTOR_MATCH_IOU = 0.5
#: A shown detector box that no annotated rectangle overlaps this much was deleted by the annotator.
BLANK_MAX_IOU = 0.1


class JSONClient(Protocol):
    """What the export needs from ``backend.labelstudio.client.LabelStudioClient``."""

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any: ...


@dataclass(frozen=True)
class LabeledBox:
    """One human box, normalized ``[x, y, w, h]`` in [0, 1] (MegaDetector format), and its species."""

    bbox: BBox
    species: str
    detector_bbox: BBox | None = None
    """MegaDetector's box for the same animal, from the prediction the annotator started from (IoU match)."""


@dataclass(frozen=True)
class LabeledTask:
    """A task whose annotation gives at least one species, or marks the photo empty."""

    task_id: int
    image: str
    location: str | None
    boxes: tuple[LabeledBox, ...] = ()
    image_species: str | None = None
    """Species of the whole image, used with the top MegaDetector box when ``boxes`` is empty."""
    empty: bool = False
    """The annotator marked the photo empty (the outcome control's empty choice)."""
    rectangles: tuple[BBox, ...] = ()
    """Every rectangle of the annotation, whatever its label (a detector box overlapping one is no blank)."""
    from_prediction: bool = False
    """The annotation was made from a prediction (``parent_prediction``): the annotator saw its boxes."""
    shown: tuple[BBox, ...] | None = None
    """MegaDetector's animal boxes in the prediction the annotation was made from; None when unknown."""
    blanks: tuple[BBox, ...] = ()
    """Shown animal boxes the annotator deleted, or all of them on a photo marked empty (see :func:`blank_boxes`)."""

    @property
    def folder(self) -> str | None:
        """The parent folder of the image reference (local files, cloud storage), or None (uploads)."""
        parent = str(PurePosixPath(reference_path(self.image)).parent)
        return None if parent in ("", ".") else parent


@dataclass
class ExportedProject:
    """The labelled tasks of one project and what was left out, with reasons."""

    project: str
    label_config: str
    tasks: list[LabeledTask]
    skipped: Counter[str] = field(default_factory=Counter)
    unmapped: Counter[str] = field(default_factory=Counter)
    """Species values found in annotations that none of the config's choices maps (left out)."""

    def counts(self) -> dict[str, int]:
        return {
            "tasks": len(self.tasks),
            "boxes": sum(len(t.boxes) for t in self.tasks),
            "image_level": sum(1 for t in self.tasks if not t.boxes and t.image_species is not None),
            "marked_empty": sum(1 for t in self.tasks if t.empty),
            "blank_boxes": sum(len(t.blanks) for t in self.tasks),
            "unmapped_labels": sum(self.unmapped.values()),
            **{f"skipped_{reason}": n for reason, n in sorted(self.skipped.items())},
        }


def export_project(
    client: JSONClient,
    project: str,
    *,
    location_fields: Sequence[str],
    base_url: str,
    label_config: str | None = None,
    label_spec: LabelSpec | None = None,
) -> ExportedProject:
    """Download and parse the project's annotations, with the predictions annotators started from.

    Args:
        client: A Label Studio API client (``LabelStudioClient``).
        project: Project id.
        location_fields: Task data keys naming the location, first match wins.
        base_url: Label Studio's URL, for error messages.
        label_config: The config if already known; otherwise it is read from the project.
        label_spec: The project's label translation (``trainer.label_translation``), applied to the species.

    Raises:
        ExportError: Label Studio is unreachable or refuses the export (one sentence with the cause).
    """
    if label_config is None:
        label_config = _call(client, f"/api/projects/{project}", None, project, base_url).get("label_config") or ""
    raw = _call(
        client,
        f"/api/projects/{project}/export",
        {"exportType": "JSON", "download_all_tasks": "false"},
        project,
        base_url,
    )
    if not isinstance(raw, list):
        raise ExportError(f"Label Studio at {base_url} answered the export of project {project} with a non-list body")
    predictions = _project_predictions(client, project) if _any_parent_prediction(raw) else {}
    exported = parse_export(
        raw, label_config, project=project, location_fields=location_fields, predictions=predictions
    )
    if label_spec is not None:
        from trainer.label_translation import apply_label_spec

        exported = apply_label_spec(exported, label_spec)
    logger.info("exported project %s: %s", project, exported.counts())
    return exported


def _any_parent_prediction(raw: Sequence[Any]) -> bool:
    return any(
        isinstance(a, dict) and a.get("parent_prediction")
        for t in raw
        if isinstance(t, dict)
        for a in t.get("annotations") or []
    )


def _project_predictions(client: JSONClient, project: str) -> dict[int, dict[str, Any]]:
    """The project's predictions by id (the JSON export only lists their ids); empty when unavailable.

    Only blank crops need them, so a failure is logged, never fatal.
    """
    try:
        listing = client.get_json("/api/predictions/", params={"project": project})
    except (BackendError, httpx.HTTPError, OSError, ValueError) as exc:
        logger.warning("project %s: predictions not read (%s); no blank crops from deleted boxes", project, exc)
        return {}
    if isinstance(listing, dict):
        listing = listing.get("results") or []
    return {int(p["id"]): p for p in listing if isinstance(p, dict) and isinstance(p.get("id"), int)}


def parse_export(
    raw: Sequence[Any],
    label_config: str,
    *,
    project: str,
    location_fields: Sequence[str],
    predictions: Mapping[int, dict[str, Any]] | None = None,
) -> ExportedProject:
    """A Label Studio JSON export (a list of task objects) -> the labelled tasks, with skip reasons.

    The one reader of exports: the training job (through :func:`export_project`) and
    ``camtrap train BASE`` (``BASE/label_studio.json``) both use it.

    Args:
        raw: The export's task objects.
        label_config: The project's labeling config.
        project: The project id (for the result).
        location_fields: Task data keys naming the location, first match wins.
        predictions: Prediction objects by id, for annotations whose ``parent_prediction`` names one
            (a task's ``predictions`` list may also hold whole prediction objects; both are used).
    """
    mapping = _read_config(label_config)
    exported = ExportedProject(project=project, label_config=label_config, tasks=[])
    for task in raw:
        if not isinstance(task, dict):
            exported.skipped["not_a_task"] += 1
            continue
        labeled, reason = parse_task(task, mapping, location_fields, predictions or {}, exported.unmapped)
        if labeled is None:
            exported.skipped[reason] += 1
        else:
            exported.tasks.append(labeled)
    if exported.unmapped:
        logger.warning(
            "labels not in the labeling config's choices were left out: %s", dict(exported.unmapped.most_common())
        )
    exported.tasks.sort(key=lambda t: t.task_id)
    return exported


def _call(client: JSONClient, path: str, params: dict[str, Any] | None, project: str, base_url: str) -> Any:
    try:
        return client.get_json(path, params=params)
    except (BackendError, httpx.HTTPError, OSError, ValueError) as exc:
        raise ExportError(
            f"Label Studio at {base_url} could not export project {project} ({exc}); check that it is running "
            "and that LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are right"
        ) from exc


def _read_config(xml: str) -> LabelMapping:
    """The project's labeling config, or the defaults (image key ``image``) when it cannot be read."""
    try:
        return read_label_config(xml)
    except LabelConfigError as exc:
        logger.warning("could not read the label config (%s); using the default image key", exc)
        return LabelMapping()


def parse_task(
    task: dict[str, Any],
    mapping: LabelMapping,
    location_fields: Sequence[str],
    predictions: Mapping[int, dict[str, Any]] | None = None,
    unmapped: Counter[str] | None = None,
) -> tuple[LabeledTask | None, str]:
    """A task's labels, or None and the reason it gives neither a species nor an empty photo.

    Args:
        task: One task object of the export.
        mapping: The labeling config, read by ``read_label_config``.
        location_fields: Task data keys naming the location, first match wins.
        predictions: Prediction objects by id (see :func:`parse_export`).
        unmapped: Counts the species values no choice of the config maps (they are left out).
    """
    data = task.get("data") or {}
    image = data.get(mapping.image_key)
    if not isinstance(image, str) or not image:
        return None, "no_image"
    annotation = choose_annotation(task.get("annotations") or [])
    if annotation is None:
        return None, "no_annotation"
    results = annotation.get("result") or []
    labels = parse_labels(results, mapping, unmapped if unmapped is not None else Counter())
    if not labels.boxes and labels.image_species is None and not labels.empty:
        return None, "no_species"
    shown = _shown_boxes(annotation, task, mapping, predictions or {})
    boxes = tuple(_with_detector_box(b, shown) for b in labels.boxes)
    location = next((str(data[k]).strip() for k in location_fields if str(data.get(k) or "").strip()), None)
    labeled = LabeledTask(
        task_id=int(task["id"]),
        image=image,
        location=location,
        boxes=boxes,
        image_species=labels.image_species,
        empty=labels.empty,
        rectangles=labels.rectangles,
        from_prediction=bool(annotation.get("parent_prediction")),
        shown=shown,
    )
    return replace(labeled, blanks=blank_boxes(labeled, shown or ())), ""


def choose_annotation(annotations: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The annotation to learn from: not cancelled, ground truth first, then the latest update."""
    usable = [a for a in annotations if not a.get("was_cancelled") and a.get("result")]
    if not usable:
        return None
    return max(usable, key=lambda a: (bool(a.get("ground_truth")), str(a.get("updated_at") or ""), a.get("id") or 0))


@dataclass(frozen=True)
class AnnotationLabels:
    """What one annotation's results say, species spelled as the config's choices spell them."""

    boxes: tuple[LabeledBox, ...]
    image_species: str | None
    empty: bool
    rectangles: tuple[BBox, ...]


def parse_labels(results: Sequence[dict[str, Any]], mapping: LabelMapping, unmapped: Counter[str]) -> AnnotationLabels:
    """Boxes with their species, the image-level species and the empty verdict of one annotation.

    A region's species is a result of the per-region species control sharing the rectangle's ``id``;
    a result of any other control (``sex``, ``age``...) never counts. The image-level species goes to
    the rectangles without a species of their own whose label is MegaDetector's ``animal`` (person and
    vehicle boxes are never species crops). Every species value is mapped onto the control's choices
    (exact, case-insensitive, ``predicted_values``); one that maps to none is counted in ``unmapped``
    and left out. Rotated rectangles count as their axis-aligned hull.
    """
    rectangles: dict[str, tuple[BBox, str | None]] = {}
    for item in results:
        if item.get("type") == "rectanglelabels" and item.get("id"):
            value = item.get("value") or {}
            bbox = ls_rectangle(value, item.get("original_width"), item.get("original_height"))
            if bbox is not None:
                labels = value.get("rectanglelabels") or [None]
                rectangles[str(item["id"])] = (bbox, labels[0])
    species_by_region: dict[str, str] = {}
    image_species = None
    empty = False
    for item in results:
        choice = first_choice(item)
        if choice is None:
            continue
        region = str(item.get("id") or "")
        control = item.get("from_name")
        if region in rectangles and control == mapping.species_from_name:
            mapped = _mapped(mapping.species_value(choice), choice, unmapped)
            if mapped is not None:
                species_by_region[region] = mapped
        elif control == mapping.image_species_from_name:
            image_species = _mapped(mapping.image_species_value(choice), choice, unmapped)
        elif control == mapping.image_choice_from_name and control is not None:
            empty = choice == mapping.outcome_values.get(ImageOutcome.EMPTY)
    boxes = [LabeledBox(bbox, species_by_region[r]) for r, (bbox, _) in rectangles.items() if r in species_by_region]
    if image_species is not None:
        animal = mapping.categories.get(ANIMAL_CATEGORY)
        boxes += [
            LabeledBox(bbox, image_species)
            for r, (bbox, label) in rectangles.items()
            if r not in species_by_region and (animal is None or label == animal)
        ]
    return AnnotationLabels(
        tuple(boxes),
        image_species,
        empty and not boxes and image_species is None,
        tuple(bbox for bbox, _ in rectangles.values()),
    )


def _mapped(value: str | None, raw: str, unmapped: Counter[str]) -> str | None:
    if value is None:
        unmapped[raw] += 1
    return value


def first_choice(item: dict[str, Any]) -> str | None:
    if item.get("type") != "choices":
        return None
    choices = (item.get("value") or {}).get("choices") or []
    return str(choices[0]) if choices else None


def _shown_boxes(
    annotation: dict[str, Any], task: dict[str, Any], mapping: LabelMapping, predictions: Mapping[int, dict[str, Any]]
) -> tuple[BBox, ...] | None:
    """MegaDetector's animal boxes in the prediction the annotation was made from (None: unknown).

    The prediction is the annotation's ``parent_prediction``, looked up in ``predictions`` or among
    whole prediction objects in the task's ``predictions`` list.
    """
    parent = annotation.get("parent_prediction")
    if not parent:
        return None
    inline = {p.get("id"): p for p in task.get("predictions") or [] if isinstance(p, dict)}
    prediction = predictions.get(parent) or inline.get(parent)
    if prediction is None:
        return None
    animal = mapping.categories.get(ANIMAL_CATEGORY)
    boxes = []
    for item in prediction.get("result") or []:
        value = item.get("value") or {}
        if item.get("type") != "rectanglelabels" or (value.get("rectanglelabels") or [None])[0] != animal:
            continue
        bbox = ls_rectangle(value, item.get("original_width"), item.get("original_height"))
        if bbox is not None:
            boxes.append(bbox)
    return tuple(boxes)


def _with_detector_box(box: LabeledBox, shown: tuple[BBox, ...] | None) -> LabeledBox:
    match = best_match(box.bbox, list(shown or ()), DETECTOR_MATCH_IOU)
    return replace(box, detector_bbox=match) if match is not None and match != box.bbox else box


def blank_boxes(task: LabeledTask, shown: Sequence[BBox]) -> tuple[BBox, ...]:
    """The shown detector animal boxes that hold no animal, by the annotator's word.

    On a photo marked empty, every shown box; otherwise a box no rectangle of the annotation overlaps
    at IoU :data:`BLANK_MAX_IOU` or more (the annotator deleted it). Photos labelled as a whole
    (image-level species, no box of their own) give none: their boxes may be the animal.
    """
    if task.image_species is not None and not task.boxes:
        return ()
    if task.empty:
        return tuple(shown)
    if not task.rectangles:
        return ()
    return tuple(b for b in shown if best_match(b, list(task.rectangles), BLANK_MAX_IOU) is None)
