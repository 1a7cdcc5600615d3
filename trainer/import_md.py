"""``camtrap import-md results.json --project N``: an existing MegaDetector batch run into the store and Label Studio.

Reads MegaDetector's batch format as ``run_detector_batch``, AddaxAI and EcoAssist write it. The whole
file is checked first (``megadetector.postprocessing.validate_batch_results``, then what it does not
check: a supported ``format_version``, four coordinates in [0, 1] per box, confidences in [0, 1]);
any problem refuses the file with the entry named, before anything is written.

Each entry is matched to a task of the project by its relative path (the task's reference path
equals the entry's ``file`` or ends with it at a folder boundary), then by file name (Label Studio's
upload prefix ``<8 hex>-`` ignored; a name two entries or two tasks share is not matched by name).
Per matched task the image is downloaded once (its sha256 is the store key): the detections are
written to the detection store under ``DATA_DIR`` for the file's detector, and a Label Studio
prediction of the boxes (``model_version`` ``<detector id>+none``) is posted for the task.
Unmatched entries are reported by file.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from backend.commands import Command
from backend.config import Settings, get_settings
from backend.contracts import registry
from backend.contracts.detection_store import DetectionStore, content_key, detector_key
from backend.errors import BackendError
from backend.labelstudio.label_config import read_label_config
from backend.labelstudio.predictions import ls_prediction
from backend.labelstudio.references import reference_path
from backend.vision.detector import Detection
from backend.vision.pipeline import Box, stored_image
from backend.vision.thresholds import Thresholds
from trainer.errors import TrainerError

logger = logging.getLogger(__name__)

#: Oldest MegaDetector batch format read (what the validator accepts).
MIN_FORMAT_VERSION = 1.3
#: Newest major version read.
MAX_FORMAT_VERSION = 2.0
#: run_detector_batch's default --threshold, assumed when the file holds no detection at all.
DEFAULT_RUN_THRESHOLD = 0.005


class MdFileError(TrainerError):
    """A MegaDetector results file that cannot be imported (the message names the entry)."""


@dataclass
class ImportMdReport:
    entries: int = 0
    matched: int = 0
    posted: int = 0
    stored: int = 0
    failed: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "matched": self.matched,
            "stored": self.stored,
            "posted": self.posted,
            "failed": self.failed,
            "unmatched": self.unmatched,
        }


def read_md_file(path: Path) -> dict[str, Any]:
    """Load and check a MegaDetector batch file; every problem is an :class:`MdFileError` naming the entry."""
    from megadetector.postprocessing.validate_batch_results import validate_batch_results

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MdFileError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise MdFileError(f"{path}: not a MegaDetector batch file (no 'images' list at the top level)")
    info = document.get("info")
    version = info.get("format_version") if isinstance(info, dict) else None
    try:
        number = float(version)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise MdFileError(f"{path}: info.format_version {version!r} is not a MegaDetector format version") from None
    if not MIN_FORMAT_VERSION <= number < MAX_FORMAT_VERSION:
        raise MdFileError(
            f"{path}: info.format_version {version} is not read (MegaDetector batch format 1.3 to 1.x expected)"
        )
    try:
        checked = validate_batch_results(document)["validation_results"]
    except Exception as exc:  # the validator asserts on some shapes
        raise MdFileError(f"{path}: refused by megadetector's validator ({type(exc).__name__}: {exc})") from exc
    if checked["errors"]:
        raise MdFileError(f"{path}: refused by megadetector's validator: {checked['errors'][0]}")
    categories = document.get("detection_categories") or {}
    for index, image in enumerate(document["images"]):
        _check_image(path, index, image, categories)
    return document


def _check_image(path: Path, index: int, image: Any, categories: dict[str, str]) -> None:
    where = f"{path}: images[{index}]"
    if not isinstance(image, dict) or not isinstance(image.get("file"), str) or not image["file"]:
        raise MdFileError(f"{where} has no 'file' string")
    where += f" ({image['file']})"
    if image.get("failure"):
        return
    detections = image.get("detections")
    if not isinstance(detections, list):
        raise MdFileError(f"{where}: 'detections' is not a list")
    for n, det in enumerate(detections):
        bbox = det.get("bbox") if isinstance(det, dict) else None
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, int | float) for v in bbox):
            raise MdFileError(f"{where}: detection {n} has bbox {bbox!r}, not four numbers [x, y, width, height]")
        x, y, w, h = (float(v) for v in bbox)
        if not (0 <= x <= 1 and 0 <= y <= 1 and 0 <= w <= 1 and 0 <= h <= 1 and x + w <= 1.001 and y + h <= 1.001):
            raise MdFileError(f"{where}: detection {n} has bbox {bbox}, outside the image (normalised 0-1 expected)")
        conf = det.get("conf")
        if not isinstance(conf, int | float) or not 0 <= float(conf) <= 1:
            raise MdFileError(f"{where}: detection {n} has conf {conf!r}, not a number in [0, 1]")
        if str(det.get("category")) not in categories:
            category = det.get("category")
            raise MdFileError(f"{where}: detection {n} has category {category!r}, not in detection_categories")


def _bbox(values: Sequence[float]) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in values)
    return (x, y, w, h)


def _normal(file: str) -> str:
    return file.replace("\\", "/").lstrip("./").lstrip("/")


def match_entries(images: Sequence[dict[str, Any]], tasks: Sequence[tuple[int, str]]) -> dict[int, dict[str, Any]]:
    """Task id -> its MegaDetector entry: by relative path first, then by unique file name."""
    paths: dict[str, list[int]] = defaultdict(list)
    for task_id, ref in tasks:
        paths[_normal(reference_path(ref))].append(task_id)
    by_path = {path: ids[0] for path, ids in paths.items() if len(ids) == 1}  # two tasks, one path: ambiguous
    names: dict[str, list[int]] = defaultdict(list)
    for task_id, ref in tasks:
        names[PurePosixPath(reference_path(ref)).name].append(task_id)
    entry_names: dict[str, int] = defaultdict(int)
    for image in images:
        entry_names[PurePosixPath(_normal(image["file"])).name] += 1
    matched: dict[int, dict[str, Any]] = {}
    pending = []
    for image in images:
        file = _normal(image["file"])
        found = by_path.get(file)
        if found is None:
            found = next(
                (t for p, t in by_path.items() if p.endswith("/" + file) or file.endswith("/" + p)),
                None,
            )
        if found is not None and found not in matched:
            matched[found] = image
        else:
            pending.append(image)
    for image in pending:
        name = PurePosixPath(_normal(image["file"])).name
        candidates = [t for t in names.get(name, []) if t not in matched]
        if entry_names[name] == 1 and len(names.get(name, [])) == 1 and candidates:
            matched[candidates[0]] = image
    return matched


def import_md(
    path: Path, project: str, *, settings: Settings, client: Any, thresholds: Thresholds | None = None
) -> ImportMdReport:
    """Check ``path``, then store its detections and post predictions for the project's matching tasks.

    Raises:
        MdFileError: the file is refused (nothing was written).
        LabelStudioError: the project cannot be read.
    """
    from trainer.project_export import fetch_project

    document = read_md_file(path)
    images = document["images"]
    tasks, config = fetch_project(client, project)
    mapping = read_label_config(config)
    refs = [
        (int(t["id"]), str((t.get("data") or {}).get(mapping.image_key)))
        for t in tasks
        if (t.get("data") or {}).get(mapping.image_key)
    ]
    matched = match_entries(images, refs)
    report = ImportMdReport(entries=len(images), matched=len(matched))
    used = {id(image) for image in matched.values()}
    report.unmatched = [image["file"] for image in images if id(image) not in used]
    detector_name = str(document["info"].get("detector") or "unknown")
    det_id = registry.detector_id(detector_name)
    store_key = detector_key(det_id, None)
    confs = [float(d["conf"]) for image in images for d in image.get("detections") or []]
    run_threshold = min(confs) if confs else DEFAULT_RUN_THRESHOLD
    version = registry.model_version(det_id, None)
    thresholds = thresholds or Thresholds.from_settings(settings)
    store = DetectionStore.under(settings.data_dir)
    ref_of = dict(refs)
    for task_id, image in sorted(matched.items()):
        if image.get("failure"):
            report.failed.append(f"{image['file']}: {image['failure']}")
            continue
        try:
            data = client.fetch_image(ref_of[task_id], task_id)
            width, height = Image.open(io.BytesIO(data)).size
        except (BackendError, OSError) as exc:
            report.failed.append(f"{image['file']}: cannot read task {task_id}'s image ({exc})")
            continue
        found = sorted(
            (Detection(str(d["category"]), float(d["conf"]), _bbox(d["bbox"])) for d in image["detections"]),
            key=lambda d: -d.conf,
        )
        store.put(content_key(data), store_key, stored_image(found, run_threshold, (width, height)))
        report.stored += 1
        boxes = [Box(d) for d in found]
        prediction = ls_prediction(boxes, mapping, width, height, version, thresholds)
        body = {"task": task_id, **prediction}
        try:
            client.create_prediction(body)
        except BackendError as exc:
            report.failed.append(f"{image['file']}: Label Studio refused the prediction of task {task_id} ({exc})")
            continue
        report.posted += 1
    return report


IMPORT_MD_HELP = """Import a MegaDetector batch results file (run_detector_batch, AddaxAI, EcoAssist) into a project:
the detections go to the detection store (so /predict, pre-annotation and training reuse them) and each
matching task gets a prediction of the boxes. Entries are matched to tasks by relative path, then by file
name (Label Studio's upload prefix ignored); unmatched entries are listed. A file with a wrong version,
bad boxes or a wrong shape is refused with the entry named, before anything is written.

  camtrap import-md season1.json --project 7
"""


def add_import_md_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", type=Path, help="MegaDetector batch results (.json)")
    parser.add_argument("--project", required=True, help="the Label Studio project id")


def run_import_md(args: argparse.Namespace) -> int:
    """Import; 1 with the error's sentence when the file is refused or Label Studio cannot be read."""
    from backend.labelstudio.client import LabelStudioClient

    settings = get_settings()
    try:
        with LabelStudioClient(settings) as client:
            report = import_md(args.results, args.project, settings=settings, client=client)
    except (TrainerError, BackendError, ValueError) as exc:
        logger.error("%s", exc)
        return 1
    sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    return 0


COMMANDS = [
    Command(
        "import-md",
        "import a MegaDetector results file into the detection store and a project's predictions",
        add_import_md_arguments,
        run_import_md,
        description=IMPORT_MD_HELP,
    )
]
