"""Camtrap DP 1.0 (https://camtrap-dp.tdwg.org), the camera-trap data package GBIF publishes: writing, validating.

A package is a folder: ``datapackage.json`` and three CSV tables, ``deployments.csv`` (one deployment per
location), ``media.csv`` (one row per photo) and ``observations.csv`` (one row per box or image-level label,
media-level; ``classificationMethod`` ``human`` for an annotation, ``machine`` for a stored prediction,
with ``classifiedBy`` the model version and ``classificationProbability`` its score).

The package names the official 1.0 profile and schema URLs, as every Camtrap DP reader expects;
:func:`validate_package` checks it with frictionless against the copies vendored in
``camtrapdp_profile/`` (see its README for where they come from), so nothing is downloaded.
:func:`write_package` writes into a temporary folder beside the target, validates it and only then
renames it into place: a package that would not validate is never left behind.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend.errors import FileFormatError
from backend.formats.observations import EMPTY_LABEL, HUMAN, MediaItem, Observation

VERSION = "1.0"
BASE_URL = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}"
PROFILE_URL = f"{BASE_URL}/camtrap-dp-profile.json"
TABLES = ("deployments", "media", "observations")
SCHEMA_URLS = {name: f"{BASE_URL}/{name}-table-schema.json" for name in TABLES}
#: The vendored profile and table schemas (offline copies of :data:`PROFILE_URL` and :data:`SCHEMA_URLS`).
VENDORED = Path(__file__).with_name("camtrapdp_profile")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
#: Labels (lower-cased) read as an observation type other than ``animal``.
OBSERVATION_TYPES = {EMPTY_LABEL: "blank", "blank": "blank", "human": "human", "person": "human", "vehicle": "vehicle"}
#: MegaDetector's categories: an animal box without a species names no taxon.
UNNAMED_ANIMAL = {"animal"}
MEDIATYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".tif": "image/tiff"}


@dataclass(frozen=True)
class Coordinates:
    """Where a deployment's camera stood (WGS84 decimal degrees)."""

    latitude: float
    longitude: float
    uncertainty_m: int | None = None


@dataclass(frozen=True)
class Capture:
    """When a photo was taken, and whether that time is only a stand-in (file mtime, task creation)."""

    timestamp: datetime
    """Naive times are read as UTC."""
    approximate: bool = False

    def aware(self) -> datetime:
        return self.timestamp if self.timestamp.tzinfo else self.timestamp.replace(tzinfo=UTC)


def table_text(name: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """One table as CSV, its columns in the vendored schema's order (every field, empty when unknown)."""
    columns = [f["name"] for f in vendored_schema(name)["fields"]]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return stamp(value)
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1 else f"{value:.6f}".rstrip("0").rstrip(".")
    return str(value)


def stamp(moment: datetime) -> str:
    """ISO 8601 with an offset (Camtrap DP requires one): naive times are read as UTC."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.strftime(TIMESTAMP_FORMAT).replace("+0000", "Z")


def vendored_schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((VENDORED / f"{name}-table-schema.json").read_text(encoding="utf-8"))
    return loaded


def package_tables(
    media: Sequence[MediaItem],
    found: Sequence[Observation],
    *,
    captures: Mapping[int, Capture],
    coordinates: Mapping[str, Coordinates],
) -> dict[str, list[dict[str, Any]]]:
    """The three tables: a deployment per location (its span from its photos), media, observations."""
    spans: dict[str, list[Capture]] = {}
    for m in media:
        spans.setdefault(_deployment(m), []).append(captures[m.task_id])
    deployments = []
    for deployment, taken in sorted(spans.items()):
        where = coordinates[deployment]
        deployments.append(
            {
                "deploymentID": deployment,
                "locationID": deployment,
                "locationName": deployment,
                "latitude": where.latitude,
                "longitude": where.longitude,
                "coordinateUncertainty": where.uncertainty_m,
                "deploymentStart": min(c.aware() for c in taken),
                "deploymentEnd": max(c.aware() for c in taken),
                "timestampIssues": any(c.approximate for c in taken),
            }
        )
    media_rows = []
    for m in media:
        name = m.image.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
        media_rows.append(
            {
                "mediaID": str(m.task_id),
                "deploymentID": _deployment(m),
                "captureMethod": "activityDetection",
                "timestamp": captures[m.task_id].aware(),
                "filePath": m.image,
                "filePublic": False,
                "fileName": name,
                "fileMediatype": MEDIATYPES.get(Path(name).suffix.lower(), "image/jpeg"),
            }
        )
    observation_rows = []
    for n, o in enumerate(found, start=1):
        when = captures[o.media.task_id].aware()
        kind = OBSERVATION_TYPES.get(o.label.strip().lower(), "animal")
        named = kind == "animal" and o.label.strip().lower() not in UNNAMED_ANIMAL
        row: dict[str, Any] = {
            "observationID": f"{o.source}-{n}",
            "deploymentID": _deployment(o.media),
            "mediaID": str(o.media.task_id),
            "eventStart": when,
            "eventEnd": when,
            "observationLevel": "media",
            "observationType": kind,
            "scientificName": o.label if named else None,
            "count": 1 if o.bbox is not None and kind != "blank" else None,
            "classificationMethod": "human" if o.source == HUMAN else "machine",
            "classifiedBy": (o.model_version or None) if o.source != HUMAN else None,
            "classificationProbability": _probability(o),
            "observationTags": f"labelStudio:{o.annotation_id}" if o.annotation_id else None,
        }
        if o.bbox is not None and kind != "blank":
            x, y, w, h = (min(max(v, 0.0), 1.0) for v in o.bbox)
            row.update(bboxX=x, bboxY=y, bboxWidth=max(min(w, 1.0 - x), 1e-6), bboxHeight=max(min(h, 1.0 - y), 1e-6))
        observation_rows.append(row)
    return {"deployments": deployments, "media": media_rows, "observations": observation_rows}


def _deployment(m: MediaItem) -> str:
    return m.location or "unknown"


def _probability(o: Observation) -> float | None:
    if o.source == HUMAN:
        return 1.0
    return None if o.score is None else min(max(float(o.score), 0.0), 1.0)


def descriptor(
    tables: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    title: str,
    contributor: str,
    created: datetime,
    coordinate_precision: float | None = None,
) -> dict[str, Any]:
    """``datapackage.json`` for :func:`package_tables`'s tables: the 1.0 profile, coverage from the data."""
    deployments = tables["deployments"]
    lats = [float(d["latitude"]) for d in deployments]
    lons = [float(d["longitude"]) for d in deployments]
    if len(deployments) == 1:
        spatial: dict[str, Any] = {"type": "Point", "coordinates": [lons[0], lats[0]]}
    else:
        w, e, s, n = min(lons), max(lons), min(lats), max(lats)
        spatial = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]], "bbox": [w, s, e, n]}
    starts = [d["deploymentStart"] for d in deployments]
    ends = [d["deploymentEnd"] for d in deployments]
    names = sorted({str(o["scientificName"]) for o in tables["observations"] if o.get("scientificName")})
    package: dict[str, Any] = {
        "profile": PROFILE_URL,
        "name": _package_name(title),
        "title": title,
        "created": stamp(created),
        "contributors": [{"title": contributor, "role": "publisher"}],
        "project": {
            "title": title,
            "samplingDesign": "opportunistic",
            "captureMethod": ["activityDetection"],
            "individualAnimals": False,
            "observationLevel": ["media"],
        },
        "spatial": spatial,
        "temporal": {"start": min(starts).date().isoformat(), "end": max(ends).date().isoformat()},
        "taxonomic": [{"scientificName": name} for name in names],
        "resources": [
            {
                "name": name,
                "path": f"{name}.csv",
                "profile": "tabular-data-resource",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "schema": SCHEMA_URLS[name],
            }
            for name in TABLES
        ],
    }
    if coordinate_precision is not None:
        package["coordinatePrecision"] = coordinate_precision
    return package


def _package_name(title: str) -> str:
    name = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")
    return "-".join(part for part in name.split("-") if part) or "camtrap-dp"


def validate_package(directory: Path) -> Any:
    """frictionless's report of the package in ``directory`` against the vendored Camtrap DP profile and table
    schemas (the official URLs it names are mapped to the vendored files; a package naming any other profile
    or schema is checked against what it names)."""
    from frictionless import system, validate

    path = directory / "datapackage.json"
    try:
        package = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"{path}: not a readable data package descriptor ({exc})") from exc
    if package.get("profile") == PROFILE_URL:
        package["profile"] = str(VENDORED / "camtrap-dp-profile.json")
    for resource in package.get("resources") or []:
        if isinstance(resource, dict) and resource.get("schema") in SCHEMA_URLS.values():
            resource["schema"] = vendored_schema(str(resource["name"]))
    with system.use_context(trusted=True):
        return validate(package, type="package", basepath=str(directory))


def report_summary(report: Any, directory: Path) -> str:
    """The first errors of a frictionless report as one sentence naming the file and row."""
    problems = []
    for task in report.tasks:
        for error in task.errors[:3]:
            where = f"{task.name}.csv" if task.name in TABLES else "datapackage.json"
            row = getattr(error, "row_number", None)
            problems.append(f"{where}{f' row {row}' if row else ''}: {error.message}")
    for error in report.errors[:3]:
        problems.append(f"datapackage.json: {error.message}")
    return f"{directory} is not a valid Camtrap DP {VERSION} package: " + "; ".join(problems[:3])


def write_package(output: Path, package: Mapping[str, Any], tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """Write the package folder ``output``, validated before it replaces anything there (FileFormatError when it
    does not validate: nothing is written)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        (staging / "datapackage.json").write_text(json.dumps(package, indent=2, ensure_ascii=False) + "\n", "utf-8")
        for name in TABLES:
            (staging / f"{name}.csv").write_text(table_text(name, tables[name]), encoding="utf-8")
        report = validate_package(staging)
        if not report.valid:
            raise FileFormatError(report_summary(report, output))
        if output.is_dir():
            shutil.rmtree(output)
        elif output.exists():
            output.unlink()
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output
