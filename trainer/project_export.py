"""``camtrap export --project N``: a project's human labels and the served model's predictions, to files.

Read from Label Studio: the JSON export of every task (``download_all_tasks``), the stored predictions
(``GET /api/predictions?project=N`` when the export lists only their ids) and the labeling config, read by
the one config reader. Per task:

- **human**: the annotation training would use (``trainer.export.choose_annotation``: not cancelled,
  ground truth first, then the latest), parsed by the training parser (``parse_labels``): each box with its
  species, else the image-level species, else ``empty`` when the image-level outcome says so;
- **model**: the task's latest prediction of this backend (its ``model_version`` kept): each box with its
  species (or its MegaDetector category when it has none) and the scores, else the image-level outcome.

Formats: ``csv`` (:mod:`backend.formats.observations`), ``coco`` (COCO Camera Traps; each annotation has
``source``, ``score`` and ``model_version`` beside the standard keys; boxes in absolute pixels when the
image size is known, else ``bbox_relative``) and ``md`` (MegaDetector's batch format, what Timelapse,
AddaxAI and EcoAssist open: per image the latest prediction's boxes with their confidence and the
species as ``classifications``; human boxes are detections with ``conf`` 1.0 and ``"source": "human"``,
an image-level human label is the image's ``human_label``) and ``camtrapdp`` (a Camtrap DP 1.0 package folder,
:func:`write_camtrapdp_export`: deployments from locations, their coordinates from the task data or a
locations CSV; timestamps from EXIF, else the task data, else the file's mtime or the task's creation).
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from backend.errors import FileFormatError
from backend.formats import camtrapdp
from backend.formats.atomic import write_json_atomically
from backend.formats.coco import EMPTY, coco_document, write_coco
from backend.formats.megadetector import COORD_DIGITS, md_output
from backend.formats.observations import (
    EMPTY_LABEL,
    HUMAN,
    MODEL,
    MediaItem,
    Observation,
    write_observations_csv,
)
from backend.labelstudio.label_config import ImageOutcome, LabelMapping, read_label_config
from backend.labelstudio.references import reference_name, reference_path
from trainer.boxes import ls_rectangle
from trainer.export import choose_annotation, first_choice, parse_labels
from trainer.grouping import EXIF_TIME, capture_time

logger = logging.getLogger(__name__)

FORMATS = ("csv", "coco", "md", "camtrapdp")
#: Task data keys read as the photo's date and time, first present wins.
DATETIME_FIELDS = ("datetime", "timestamp", "date_time", "DateTimeOriginal")


class Client(Protocol):
    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any: ...


def fetch_project(client: Client, project: str) -> tuple[list[dict[str, Any]], str]:
    """Every task of the project with its annotations and full predictions, and the labeling config."""
    config = (client.get_json(f"/api/projects/{project}") or {}).get("label_config") or ""
    tasks = client.get_json(
        f"/api/projects/{project}/export", params={"exportType": "JSON", "download_all_tasks": "true"}
    )
    if not isinstance(tasks, list):
        raise ValueError(f"Label Studio answered the export of project {project} with a non-list body")
    if any(isinstance(p, int) for t in tasks for p in t.get("predictions") or []):
        body = client.get_json("/api/predictions", params={"project": project})
        by_task: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for prediction in body.get("results", []) if isinstance(body, dict) else body or []:
            by_task[int(prediction.get("task") or 0)].append(prediction)
        for task in tasks:
            task["predictions"] = by_task.get(int(task["id"]), [])
    return tasks, config


def observations(
    tasks: Sequence[dict[str, Any]], label_config: str, *, location_fields: Sequence[str]
) -> tuple[list[MediaItem], list[Observation]]:
    """The photos and every human and model observation of them."""
    mapping = read_label_config(label_config)
    media: list[MediaItem] = []
    found: list[Observation] = []
    for task in sorted(tasks, key=lambda t: int(t["id"])):
        data = task.get("data") or {}
        image = data.get(mapping.image_key)
        if not isinstance(image, str) or not image:
            continue
        item = MediaItem(
            int(task["id"]),
            image,
            _first(data, location_fields),
            _first(data, DATETIME_FIELDS),
            *_size(task),
        )
        media.append(item)
        found += _human(item, task, mapping)
        found += _model(item, task, mapping)
    return media, found


def _human(item: MediaItem, task: dict[str, Any], mapping: LabelMapping) -> list[Observation]:
    annotation = choose_annotation(task.get("annotations") or [])
    if annotation is None:
        return []
    results = annotation.get("result") or []
    labels = parse_labels(results, mapping, Counter())
    boxes, image_species = labels.boxes, labels.image_species
    annotation_id = str(annotation.get("id", ""))
    if boxes:
        return [Observation(item, HUMAN, b.species, b.bbox, annotation_id=annotation_id) for b in boxes]
    if image_species is not None:
        return [Observation(item, HUMAN, image_species, annotation_id=annotation_id)]
    if _outcome(results, mapping) == ImageOutcome.EMPTY:
        return [Observation(item, HUMAN, EMPTY_LABEL, annotation_id=annotation_id)]
    return []


def _model(item: MediaItem, task: dict[str, Any], mapping: LabelMapping) -> list[Observation]:
    predictions = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    if not predictions:
        return []
    latest = max(predictions, key=lambda p: (str(p.get("created_at") or ""), p.get("id") or 0))
    version = str(latest.get("model_version") or "")
    prediction_id = str(latest.get("id", ""))
    results = latest.get("result") or []
    regions: dict[str, tuple[tuple[float, float, float, float], str, float | None]] = {}
    for r in results:
        if r.get("type") == "rectanglelabels" and r.get("id"):
            bbox = ls_rectangle(r.get("value") or {}, r.get("original_width"), r.get("original_height"))
            labels = (r.get("value") or {}).get("rectanglelabels") or ["animal"]
            if bbox is not None:
                regions[str(r["id"])] = (bbox, str(labels[0]), r.get("score"))
    species: dict[str, tuple[str, float | None]] = {}
    for r in results:
        choice = first_choice(r)
        if choice and str(r.get("id")) in regions and r.get("from_name") == mapping.species_from_name:
            species[str(r["id"])] = (choice, r.get("score"))
    found = []
    for region, (bbox, category, score) in regions.items():
        label, label_score = species.get(region, (category, score))
        found.append(Observation(item, MODEL, label, bbox, label_score, version, prediction_id))
    if not found and _outcome(results, mapping) == ImageOutcome.EMPTY:
        score = next((r.get("score") for r in results if r.get("from_name") == mapping.image_choice_from_name), None)
        found.append(Observation(item, MODEL, EMPTY_LABEL, None, score, version, prediction_id))
    return found


def _outcome(results: Sequence[dict[str, Any]], mapping: LabelMapping) -> ImageOutcome | None:
    values = {value: outcome for outcome, value in mapping.outcome_values.items()}
    for r in results:
        if r.get("from_name") == mapping.image_choice_from_name:
            choice = first_choice(r)
            if choice in values:
                return values[choice]
    return None


def _first(data: dict[str, Any], keys: Sequence[str]) -> str | None:
    return next((str(data[k]).strip() for k in keys if str(data.get(k) or "").strip()), None)


def _size(task: dict[str, Any]) -> tuple[int | None, int | None]:
    for source in [
        *(task.get("annotations") or []),
        *(p for p in task.get("predictions") or [] if isinstance(p, dict)),
    ]:
        for r in source.get("result") or []:
            if r.get("original_width") and r.get("original_height"):
                return int(r["original_width"]), int(r["original_height"])
    return None, None


def coco_export(media: Sequence[MediaItem], found: Sequence[Observation], project: str) -> dict[str, Any]:
    """The observations as a COCO Camera Traps document (``source``/``score``/``model_version`` per annotation)."""
    images = []
    for m in media:
        entry: dict[str, Any] = {"id": str(m.task_id), "file_name": reference_path(m.image), "ls_image": m.image}
        if m.width and m.height:
            entry.update(width=m.width, height=m.height)
        if m.location:
            entry["location"] = m.location
        if m.datetime:
            entry["datetime"] = m.datetime
        images.append(entry)
    annotations = []
    for n, o in enumerate(found):
        entry = {"id": f"{o.source}-{n}", "image_id": str(o.media.task_id), "category": _category(o.label)}
        if o.bbox is not None and o.media.width and o.media.height:
            w, h = o.media.width, o.media.height
            entry["bbox"] = [
                round(o.bbox[0] * w, 2),
                round(o.bbox[1] * h, 2),
                round(o.bbox[2] * w, 2),
                round(o.bbox[3] * h, 2),
            ]
        elif o.bbox is not None:
            entry["bbox_relative"] = [round(v, 6) for v in o.bbox]
        entry["source"] = o.source
        if o.score is not None:
            entry["score"] = o.score
        if o.model_version:
            entry["model_version"] = o.model_version
        annotations.append(entry)
    labels = sorted({_category(o.label) for o in found} - {EMPTY})
    return coco_document(
        images,
        annotations,
        [EMPTY, *labels],
        description=f"Label Studio project {project}: human labels and model predictions",
    )


def _category(label: str) -> str:
    return EMPTY if label == EMPTY_LABEL else label


def write_export(
    format_name: str, output: Path, media: Sequence[MediaItem], found: Sequence[Observation], *, project: str
) -> Path:
    """Write one format to ``output``, atomically."""
    if format_name == "csv":
        return write_observations_csv(output, found)
    if format_name == "coco":
        return write_coco(output, coco_export(media, found, project))
    if format_name == "md":
        raise ValueError("the md format is written from the tasks: use write_md_export")
    if format_name == "camtrapdp":
        raise ValueError("the camtrapdp format needs timestamps and coordinates: use write_camtrapdp_export")
    raise ValueError(f"unknown export format {format_name!r}; expected one of {', '.join(FORMATS)}")


def _latest_prediction(task: dict[str, Any]) -> dict[str, Any] | None:
    predictions = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    if not predictions:
        return None
    return max(predictions, key=lambda p: (str(p.get("created_at") or ""), p.get("id") or 0))


def md_export(tasks: Sequence[dict[str, Any]], label_config: str, detector_model: str) -> dict[str, Any]:
    """The project as a MegaDetector batch document (see the module docstring); validates with megadetector's
    ``validate_batch_results``."""
    mapping = read_label_config(label_config)
    category_of = {label: category for category, label in mapping.categories.items()}
    rows: list[tuple[str, list[dict[str, Any]], str | None]] = []
    species: set[str] = set()
    versions: Counter[str] = Counter()
    for task in sorted(tasks, key=lambda t: int(t["id"])):
        image = (task.get("data") or {}).get(mapping.image_key)
        if not isinstance(image, str) or not image:
            continue
        item = MediaItem(int(task["id"]), image, None, None, *_size(task))
        detections: list[dict[str, Any]] = []
        human_label = None
        for o in _human(item, task, mapping):
            if o.bbox is None:
                human_label = o.label
                continue
            detections.append(
                {
                    "category": "1",
                    "conf": 1.0,
                    "bbox": list(o.bbox),
                    "label": o.label,
                    "label_score": 1.0,
                    "source": "human",
                }
            )
            species.add(o.label)
        latest = _latest_prediction(task)
        if latest is not None:
            versions[str(latest.get("model_version") or "")] += 1
            detections += _md_detections(latest, mapping, category_of, species)
        if latest is None and not detections and human_label is None:
            continue
        rows.append((reference_path(image), detections, human_label))
    labels = sorted(species)
    images = []
    for file, detections, human_label in rows:
        out = []
        for d in sorted(detections, key=lambda d: -d["conf"]):
            entry: dict[str, Any] = {
                "category": d["category"],
                "conf": round(float(d["conf"]), 3),
                "bbox": [round(min(max(float(v), 0.0), 1.0), COORD_DIGITS) for v in d["bbox"]],
            }
            if d.get("label") in labels:
                entry["classifications"] = [[str(labels.index(d["label"])), round(float(d["label_score"]), 3)]]
            if d.get("source"):
                entry["source"] = d["source"]
            out.append(entry)
        image_entry: dict[str, Any] = {"file": file, "detections": out}
        if human_label is not None:
            image_entry["human_label"] = human_label
        images.append(image_entry)
    version = versions.most_common(1)[0][0] if versions else ""
    return md_output(sorted(images, key=lambda i: i["file"]), detector_model, labels, version)


def _md_detections(
    prediction: dict[str, Any], mapping: LabelMapping, category_of: dict[str, str], species: set[str]
) -> list[dict[str, Any]]:
    results = prediction.get("result") or []
    choices = {
        str(r.get("id")): (first_choice(r), r.get("score"))
        for r in results
        if r.get("from_name") == mapping.species_from_name and r.get("id")
    }
    found = []
    for r in results:
        if r.get("type") != "rectanglelabels":
            continue
        value = r.get("value") or {}
        bbox = ls_rectangle(value, r.get("original_width"), r.get("original_height"))
        labels = value.get("rectanglelabels") or []
        category = category_of.get(str(labels[0])) if labels else None
        if bbox is None or category is None:
            continue
        entry: dict[str, Any] = {"category": category, "conf": float(r.get("score") or 0.0), "bbox": list(bbox)}
        label, score = choices.get(str(r.get("id")), (None, None))
        if label:
            entry.update(label=label, label_score=float(score if score is not None else 1.0))
            species.add(label)
        found.append(entry)
    return found


def write_md_export(output: Path, tasks: Sequence[dict[str, Any]], label_config: str, detector_model: str) -> Path:
    """``camtrap export --format md``: :func:`md_export` written atomically."""
    return write_json_atomically(output, md_export(tasks, label_config, detector_model))


#: Task data keys read as a location's coordinates (decimal degrees, WGS84).
LATITUDE_FIELDS = ("latitude", "lat")
LONGITUDE_FIELDS = ("longitude", "lon", "lng")
#: Columns of ``--locations``: the location name, then its coordinates (``coordinateUncertainty`` optional, m).
LOCATION_COLUMNS = ("location", "latitude", "longitude")


def write_camtrapdp_export(
    output: Path,
    tasks: Sequence[dict[str, Any]],
    media: Sequence[MediaItem],
    found: Sequence[Observation],
    *,
    project: str,
    images_root: Path | None = None,
    locations: Path | None = None,
) -> Path:
    """``camtrap export --format camtrapdp``: the package folder ``output``, validated against the vendored
    Camtrap DP profile before it is moved into place (FileFormatError, nothing written, when a location has
    no coordinates, a photo no time, or the package does not validate)."""
    by_id = {int(t["id"]): t for t in tasks}
    coordinates = read_locations(locations) if locations is not None else {}
    captures: dict[int, camtrapdp.Capture] = {}
    for m in media:
        task = by_id[m.task_id]
        captures[m.task_id] = _capture(m, task, images_root)
        place = m.location or "unknown"
        if place not in coordinates:
            where = _coordinates(task.get("data") or {})
            if where is None:
                source = f"{locations}" if locations is not None else "the task data (latitude, longitude)"
                raise FileFormatError(
                    f"location {place!r} (task {m.task_id}) has no coordinates in {source}: Camtrap DP 1.0 requires "
                    "deployments.latitude and .longitude; give them with --locations CSV (location,latitude,longitude)"
                )
            coordinates[place] = where
    tables = camtrapdp.package_tables(media, found, captures=captures, coordinates=coordinates)
    package = camtrapdp.descriptor(
        tables,
        title=f"Label Studio project {project}",
        contributor="camtrap-ml-backend",
        created=datetime.now(UTC),
    )
    return camtrapdp.write_package(output, package, tables)


def read_locations(path: Path) -> dict[str, camtrapdp.Coordinates]:
    """``location,latitude,longitude[,coordinateUncertainty]`` rows; one sentence naming the line when one is bad."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"cannot read the locations file {path}: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in LOCATION_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise FileFormatError(
            f"{path}, line 1: missing column(s) {', '.join(missing)}; expected {','.join(LOCATION_COLUMNS)}"
        )
    found: dict[str, camtrapdp.Coordinates] = {}
    for row in reader:
        line = reader.line_num
        try:
            lat, lon = float(row["latitude"]), float(row["longitude"])
            uncertainty = (
                int(row["coordinateUncertainty"]) if (row.get("coordinateUncertainty") or "").strip() else None
            )
        except ValueError as exc:
            raise FileFormatError(f"{path}, line {line}: expected decimal degrees latitude,longitude ({exc})") from exc
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise FileFormatError(f"{path}, line {line}: latitude {lat} or longitude {lon} is out of range")
        found[row["location"].strip()] = camtrapdp.Coordinates(lat, lon, uncertainty)
    return found


def _coordinates(data: dict[str, Any]) -> camtrapdp.Coordinates | None:
    lat, lon = _first(data, LATITUDE_FIELDS), _first(data, LONGITUDE_FIELDS)
    if lat is None or lon is None:
        return None
    try:
        return camtrapdp.Coordinates(float(lat), float(lon))
    except ValueError:
        return None


def _capture(m: MediaItem, task: dict[str, Any], images_root: Path | None) -> camtrapdp.Capture:
    """EXIF DateTimeOriginal of the file under ``images_root``, else the task data's time, else the file's mtime,
    else the task's creation (the last two marked approximate: ``deployments.timestampIssues``)."""
    file = _local_file(m.image, images_root)
    if file is not None:
        try:
            taken = capture_time(file.read_bytes())
        except OSError:
            taken = None
        if taken is not None:
            return camtrapdp.Capture(datetime.fromtimestamp(taken, UTC))
    if m.datetime:
        parsed = _parse_time(m.datetime)
        if parsed is not None:
            return camtrapdp.Capture(parsed)
    if file is not None:
        return camtrapdp.Capture(datetime.fromtimestamp(file.stat().st_mtime, UTC), approximate=True)
    created = _parse_time(str(task.get("created_at") or ""))
    if created is not None:
        return camtrapdp.Capture(created, approximate=True)
    raise FileFormatError(
        f"task {m.task_id} ({m.image}) has no time: no EXIF file under --images-root, no {DATETIME_FIELDS[0]} in its "
        "data, no created_at; Camtrap DP 1.0 requires media.timestamp"
    )


def _local_file(image: str, images_root: Path | None) -> Path | None:
    if images_root is None:
        return None
    for relative in (reference_path(image), reference_name(image)):
        candidate = images_root / relative
        if candidate.is_file():
            return candidate
    return None


def _parse_time(value: str) -> datetime | None:
    text = value.strip()
    for parse in (
        lambda t: datetime.fromisoformat(t.replace("Z", "+00:00")),
        lambda t: datetime.strptime(t, EXIF_TIME),
    ):
        try:
            return parse(text)
        except ValueError:
            continue
    return None
