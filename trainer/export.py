"""Export a project's human annotations from Label Studio, the source of truth, into labelled tasks.

One Label Studio JSON export (``GET /api/projects/<id>/export?exportType=JSON``, annotated tasks
only) becomes a list of :class:`LabeledTask`: the image reference, the task's location (the first of
``location_fields`` present in the task data) and either boxes with a species or an image-level species.

Which annotation of a task is used: not cancelled (skips), ground truth first, then the most recently
updated. Which controls hold the species is decided by the one labeling-config reader,
``backend.labelstudio.label_config.read_label_config``, that serving uses too (see :func:`parse_result`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from backend.errors import BackendError, LabelConfigError
from backend.labelstudio.label_config import LabelMapping, read_label_config
from backend.vision.categories import ANIMAL_CATEGORY
from trainer.errors import ExportError

if TYPE_CHECKING:
    from backend.formats.label_spec import LabelSpec

logger = logging.getLogger(__name__)


class JSONClient(Protocol):
    """What the export needs from ``backend.labelstudio.client.LabelStudioClient``."""

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any: ...


@dataclass(frozen=True)
class LabeledBox:
    """One human box, normalized ``[x, y, w, h]`` in [0, 1] (MegaDetector format), and its species."""

    bbox: tuple[float, float, float, float]
    species: str


@dataclass(frozen=True)
class LabeledTask:
    """A task whose annotation gives at least one species."""

    task_id: int
    image: str
    location: str | None
    boxes: tuple[LabeledBox, ...] = ()
    image_species: str | None = None
    """Species of the whole image, used with the top MegaDetector box when ``boxes`` is empty."""


@dataclass
class ExportedProject:
    """The labelled tasks of one project and what was left out, with reasons."""

    project: str
    label_config: str
    tasks: list[LabeledTask]
    skipped: Counter[str] = field(default_factory=Counter)

    def counts(self) -> dict[str, int]:
        return {
            "tasks": len(self.tasks),
            "boxes": sum(len(t.boxes) for t in self.tasks),
            "image_level": sum(1 for t in self.tasks if not t.boxes),
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
    """Download and parse the project's annotations.

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
    exported = parse_export(raw, label_config, project=project, location_fields=location_fields)
    if label_spec is not None:
        from trainer.label_translation import apply_label_spec

        exported = apply_label_spec(exported, label_spec)
    logger.info("exported project %s: %s", project, exported.counts())
    return exported


def parse_export(
    raw: Sequence[Any], label_config: str, *, project: str, location_fields: Sequence[str]
) -> ExportedProject:
    """A Label Studio JSON export (a list of task objects) -> the labelled tasks, with skip reasons.

    The one reader of exports: the training job (through :func:`export_project`) and
    ``camtrap train BASE`` (``BASE/label_studio.json``) both use it.
    """
    mapping = _read_config(label_config)
    exported = ExportedProject(project=project, label_config=label_config, tasks=[])
    for task in raw:
        labeled, reason = parse_task(task, mapping, location_fields) if isinstance(task, dict) else (None, "not_a_task")
        if labeled is None:
            exported.skipped[reason] += 1
        else:
            exported.tasks.append(labeled)
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
    task: dict[str, Any], mapping: LabelMapping, location_fields: Sequence[str]
) -> tuple[LabeledTask | None, str]:
    """A task's labels, or None and the reason it gives no species."""
    data = task.get("data") or {}
    image = data.get(mapping.image_key)
    if not isinstance(image, str) or not image:
        return None, "no_image"
    annotation = choose_annotation(task.get("annotations") or [])
    if annotation is None:
        return None, "no_annotation"
    boxes, image_species = parse_result(annotation.get("result") or [], mapping)
    if not boxes and image_species is None:
        return None, "no_species"
    location = next((str(data[k]).strip() for k in location_fields if str(data.get(k) or "").strip()), None)
    return LabeledTask(int(task["id"]), image, location, tuple(boxes), image_species), ""


def choose_annotation(annotations: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The annotation to learn from: not cancelled, ground truth first, then the latest update."""
    usable = [a for a in annotations if not a.get("was_cancelled") and a.get("result")]
    if not usable:
        return None
    return max(usable, key=lambda a: (bool(a.get("ground_truth")), str(a.get("updated_at") or ""), a.get("id") or 0))


def parse_result(results: Sequence[dict[str, Any]], mapping: LabelMapping) -> tuple[list[LabeledBox], str | None]:
    """Boxes with their species, and the image-level species, from one annotation's results.

    A region's species is a result of the per-region species control sharing the rectangle's ``id``;
    a result of any other control (``sex``, ``age``...) never counts. The image-level species goes to
    the rectangles without a species of their own whose label is MegaDetector's ``animal`` (person and
    vehicle boxes are never species crops).
    """
    rectangles: dict[str, tuple[tuple[float, float, float, float], str | None]] = {}
    for item in results:
        if item.get("type") == "rectanglelabels" and item.get("id"):
            bbox = normalized_box(item.get("value") or {})
            if bbox is not None:
                labels = (item.get("value") or {}).get("rectanglelabels") or [None]
                rectangles[str(item["id"])] = (bbox, labels[0])
    species_by_region: dict[str, str] = {}
    image_species = None
    for item in results:
        choice = first_choice(item)
        if choice is None:
            continue
        region = str(item.get("id") or "")
        control = item.get("from_name")
        if region in rectangles and control == mapping.species_from_name:
            species_by_region[region] = choice
        elif control == mapping.image_species_from_name:
            image_species = choice
    boxes = [LabeledBox(bbox, species_by_region[r]) for r, (bbox, _) in rectangles.items() if r in species_by_region]
    if image_species is not None:
        animal = mapping.categories.get(ANIMAL_CATEGORY)
        boxes += [
            LabeledBox(bbox, image_species)
            for r, (bbox, label) in rectangles.items()
            if r not in species_by_region and (animal is None or label == animal)
        ]
    return boxes, image_species


def first_choice(item: dict[str, Any]) -> str | None:
    if item.get("type") != "choices":
        return None
    choices = (item.get("value") or {}).get("choices") or []
    return str(choices[0]) if choices else None


def normalized_box(value: dict[str, Any]) -> tuple[float, float, float, float] | None:
    """LS percent ``x, y, width, height`` -> normalized, clipped to the image; None if it has no area."""
    try:
        x, y, w, h = (float(value[k]) / 100.0 for k in ("x", "y", "width", "height"))
    except (KeyError, TypeError, ValueError):
        return None
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(1.0, x + w), min(1.0, y + h)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0)
