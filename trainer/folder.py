"""Training data from files alone: the folder ``camtrap train BASE`` reads, and the files it writes.

Layouts of ``BASE`` (the first that matches is used):

=====================================================  ===============================================
files                                                  what they are
=====================================================  ===============================================
``label_studio.json`` + ``label_config.xml`` +         a Label Studio JSON export of a project and its
``images/``                                            labeling config; task images are found under
                                                       ``images/`` by file name (upload prefix ignored)
``crops/`` + ``label_studio.csv``                      the comvis "Stage 3" recipe: crops and a Label
(+ ``label_config.xml``, optional)                     Studio CSV export of a Choices project over them
``crops/`` + ``labels.csv``                            crops and a ``path,label[,location]`` table
=====================================================  ===============================================

A JSON export is read by :func:`trainer.export.parse_export`, the code the training job runs on Label
Studio's API, so every rule of the job (which annotation, which control is the species, boxes, image-level
species) holds for files too. A CSV export is read by :mod:`backend.formats.ls_csv` (several annotators,
empty and multi-choice cells: see there). A crop is a whole image: it gets one box over all of it, so the
crop stage makes the square MegaDetector's ``--square-crops`` would. With a location (a ``location``,
``site`` or ``camera`` column) the split holds out whole locations; without, it is the split's seeded,
per-species stratified split over crops (logged). ``BASE/label_spec.json``, when present, translates the
labels first (:mod:`trainer.label_translation`). What is written to ``BASE/logs/`` is listed in
:func:`write_recipe_files`.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from backend.contracts.bundle import CONFUSION_MATRIX_FILE, METRICS_FILE, TENSORBOARD_DIR, read_manifest
from backend.errors import FileFormatError, ImageAccessError, LabelConfigError
from backend.formats.atomic import atomic_target
from backend.formats.label_spec import read_label_spec, write_label_index
from backend.formats.labels_csv import read_labels_csv
from backend.formats.ls_csv import IMAGE_COLUMN, LABEL_COLUMN, read_ls_csv, resolve_tasks
from backend.labelstudio.label_config import read_label_config
from backend.labelstudio.references import reference_name, reference_path, upload_safe_name
from trainer.crops import Fetch
from trainer.errors import FolderLayoutError
from trainer.export import ExportedProject, LabeledBox, LabeledTask, parse_export
from trainer.label_translation import apply_label_spec

logger = logging.getLogger(__name__)

#: The project id of a folder's bundles under ``BASE/logs/models/``.
FOLDER_PROJECT = "folder"
#: Image file extensions looked for under a folder (case-insensitive).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
#: The recipe's class map file name (sic: comvis spells it so).
LABEL_CORRESPONDENCE_FILE = "label_correspondance.json"

#: ``label_index.json``: the same class map under MegaDetector's classification pipeline's name.
LABEL_INDEX_FILE = "label_index.json"

LS_JSON = "label_studio.json"
LS_CONFIG = "label_config.xml"
IMAGES_DIR = "images"
LS_CSV = "label_studio.csv"
LABELS_CSV = "labels.csv"
CROPS_DIR = "crops"
LABEL_SPEC = "label_spec.json"
#: The box of a crop that is a whole image.
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)


@dataclass
class FolderDataset:
    """A training folder read: its labelled tasks and how to read each task's image."""

    base: Path
    layout: str
    """Which layout was found (``label-studio-json``, ...)."""
    exported: ExportedProject
    fetch: Fetch
    """``(image reference, task id) -> bytes`` of the file the reference names."""


#: A layout: (name, "does BASE look like it", reader).
Reader = Callable[[Path, Sequence[str]], FolderDataset]


def read_folder(base: Path, *, location_fields: Sequence[str]) -> FolderDataset:
    """Read ``BASE`` in the first layout it matches.

    Raises:
        FolderLayoutError: ``BASE`` matches no layout, or one of its files is malformed.
    """
    if not base.is_dir():
        raise FolderLayoutError(f"{base} is not a folder: give the training folder (camtrap train BASE)")
    for name, matches, reader in LAYOUTS:
        if matches(base):
            logger.info("reading %s as %s", base, name)
            try:
                dataset = reader(base, location_fields)
                if (base / LABEL_SPEC).is_file():
                    dataset.exported = apply_label_spec(dataset.exported, read_label_spec(base / LABEL_SPEC))
            except FileFormatError as exc:
                raise FolderLayoutError(str(exc)) from exc
            return dataset
    expected = "; ".join(describe for describe in LAYOUT_HELP)
    raise FolderLayoutError(f"{base} holds none of the training layouts: expected {expected}")


def read_label_studio_json(base: Path, location_fields: Sequence[str]) -> FolderDataset:
    """``BASE/label_studio.json`` (a Label Studio JSON export) + ``label_config.xml`` + ``images/``."""
    export_path, config_path, images = base / LS_JSON, base / LS_CONFIG, base / IMAGES_DIR
    for path in (config_path, images):
        if not path.exists():
            raise FolderLayoutError(
                f"{base} has {LS_JSON} but no {path.name}: add the project's labeling config "
                f"as {LS_CONFIG} and the task images under {IMAGES_DIR}/"
            )
    try:
        raw = json.loads(export_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise FolderLayoutError(f"{export_path} is not UTF-8 text: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise FolderLayoutError(
            f"{export_path}, line {exc.lineno}: not valid JSON ({exc.msg}); export the project as JSON"
        ) from exc
    if not isinstance(raw, list):
        raise FolderLayoutError(
            f"{export_path}: expected a list of tasks (Label Studio's JSON export), got a {type(raw).__name__}; "
            "JSON-MIN and CSV exports lose the link between boxes and species"
        )
    for index, task in enumerate(raw):
        if not isinstance(task, dict) or "id" not in task or "data" not in task:
            raise FolderLayoutError(f"{export_path}: entry {index} is not a Label Studio task (needs id and data)")
    exported = parse_export(
        raw, config_path.read_text(encoding="utf-8"), project=FOLDER_PROJECT, location_fields=location_fields
    )
    return FolderDataset(base, "label-studio-json", exported, FileIndex(images).fetch)


def read_label_studio_csv(base: Path, location_fields: Sequence[str]) -> FolderDataset:
    """``BASE/crops/`` + ``BASE/label_studio.csv`` (a Label Studio CSV export over the crops).

    The label column is ``choice`` and the image column ``image`` (the Image Classification template), or
    what ``BASE/label_config.xml`` says when it is there; with a config, a label that is not one of its
    choices is an error naming the line.
    """
    crops = _crops_dir(base, LS_CSV)
    label_column, image_column, choices, xml = LABEL_COLUMN, IMAGE_COLUMN, set(), ""
    if (base / LS_CONFIG).is_file():
        xml = (base / LS_CONFIG).read_text(encoding="utf-8")
        try:
            mapping = read_label_config(xml)
        except LabelConfigError as exc:
            raise FolderLayoutError(f"{base / LS_CONFIG}: {exc}") from exc
        label_column = mapping.image_species_from_name or label_column
        image_column = mapping.image_key
        choices = set(mapping.image_species_values.values())
    rows, _ = read_ls_csv(base / LS_CSV, label_column=label_column, image_column=image_column)
    resolved = resolve_tasks(rows)
    tasks = []
    for task in resolved.tasks:
        if choices and task.label not in choices:
            raise FolderLayoutError(
                f"{base / LS_CSV}, line {task.row.line}: label {task.label!r} is not a choice of {LS_CONFIG} "
                f"(expected one of {', '.join(sorted(choices))})"
            )
        location = _location(task.row.data, location_fields)
        tasks.append(LabeledTask(task.task_id, task.image, location, (LabeledBox(WHOLE_IMAGE, task.label),)))
    exported = ExportedProject(FOLDER_PROJECT, xml, tasks, resolved.skipped)
    _log_grouping(base / LS_CSV, tasks, location_fields)
    return FolderDataset(base, "crops-label-studio-csv", exported, FileIndex(crops).fetch)


def read_labels_table(base: Path, location_fields: Sequence[str]) -> FolderDataset:
    """``BASE/crops/`` + ``BASE/labels.csv`` (``path,label[,location]``, paths relative to ``crops/``)."""
    crops = _crops_dir(base, LABELS_CSV)
    rows = read_labels_csv(base / LABELS_CSV)
    tasks = [LabeledTask(row.line, row.path, row.location, (LabeledBox(WHOLE_IMAGE, row.label),)) for row in rows]
    exported = ExportedProject(FOLDER_PROJECT, "", tasks)
    _log_grouping(base / LABELS_CSV, tasks, ("location",))
    return FolderDataset(base, "crops-labels-csv", exported, FileIndex(crops).fetch)


def _crops_dir(base: Path, table: str) -> Path:
    crops = base / CROPS_DIR
    if not crops.is_dir():
        raise FolderLayoutError(f"{base} has {table} but no {CROPS_DIR}/ folder: put the crops it names in {crops}")
    return crops


def _location(data: dict[str, str], location_fields: Sequence[str]) -> str | None:
    return next((data[k].strip() for k in location_fields if (data.get(k) or "").strip()), None)


def _log_grouping(table: Path, tasks: Sequence[LabeledTask], location_fields: Sequence[str]) -> None:
    locations = {t.location for t in tasks if t.location}
    if locations:
        logger.info("%s: %d locations: the split holds out whole locations", table, len(locations))
    else:
        logger.info(
            "%s has no location column (%s): the split is a seeded (TRAIN_SEED), per-species stratified split "
            "over the crops",
            table,
            ", ".join(location_fields),
        )


class FileIndex:
    """The image files under a folder, found by the file name a Label Studio reference names.

    A reference is matched by its relative path first (``images/<path>``), then by its file name, also in
    the form a Label Studio upload stores it; zero or several matches fail that image only, with the reason.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_name: dict[str, list[Path]] = defaultdict(list)
        for path in _image_files(root):
            self._by_name[path.name.casefold()].append(path)
            safe = upload_safe_name(path.name).casefold()
            if safe != path.name.casefold():
                self._by_name[safe].append(path)

    def find(self, reference: str) -> Path:
        """The file ``reference`` names.

        Raises:
            ImageAccessError: no file, or more than one, matches (the message names them).
        """
        relative = self.root / reference_path(reference)
        if relative.is_file():
            return relative
        name = reference_name(reference)
        found = sorted(set(self._by_name.get(name.casefold(), [])))
        if len(found) > 1:
            wanted = "/" + reference_path(reference).casefold()
            found = [p for p in found if wanted.endswith("/" + p.relative_to(self.root).as_posix().casefold())] or found
        if len(found) == 1:
            return found[0]
        if not found:
            raise ImageAccessError(f"no file named {name!r} under {self.root} (for {reference!r})")
        listing = ", ".join(str(p.relative_to(self.root)) for p in found[:5])
        raise ImageAccessError(f"{len(found)} files named {name!r} under {self.root} ({listing}): names must be unique")

    def fetch(self, reference: str, task_id: int | None = None) -> bytes:
        """The bytes of the file ``reference`` names (the ``Fetch`` the crop stage takes)."""
        path = self.find(reference)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ImageAccessError(f"cannot read {path}: {exc.strerror or exc}") from exc


def write_recipe_files(bundle: Path, logs: Path) -> list[Path]:
    """Copy what users of the comvis Stage 3 recipe expect into ``BASE/logs/``, from the trained bundle.

    Written: ``label_correspondance.json`` (``{"0": "label", ...}``, indent 1, as the recipe spells and
    writes it) and the same map as ``label_index.json`` (MegaDetector's name), ``model.pt`` (TorchScript
    that runs without this code: :mod:`trainer.torchscript`), ``metrics.json``, ``confusion_matrix.png`` and
    the TensorBoard event files. The bundle itself stays under ``logs/models/``. Each file is written to a
    temporary name and renamed.

    Returns:
        The files written.
    """
    from trainer.torchscript import MODEL_FILE, export_torchscript

    manifest = read_manifest(bundle)
    logs.mkdir(parents=True, exist_ok=True)
    written = [
        write_label_index(logs / LABEL_CORRESPONDENCE_FILE, manifest.labels),
        write_label_index(logs / LABEL_INDEX_FILE, manifest.labels),
        export_torchscript(bundle, logs / MODEL_FILE),
    ]
    for name in (METRICS_FILE, CONFUSION_MATRIX_FILE):
        if (bundle / name).is_file():
            written.append(_copy(bundle / name, logs / name))
    for event_file in sorted((bundle / TENSORBOARD_DIR).glob("events.out.tfevents.*")):
        written.append(_copy(event_file, logs / event_file.name))
    return written


def _image_files(root: Path) -> Iterable[Path]:
    return (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _copy(source: Path, target: Path) -> Path:
    with atomic_target(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


#: The layouts, in the order they are tried: name, test, reader.
LAYOUTS: list[tuple[str, Callable[[Path], bool], Reader]] = [
    ("label-studio-json", lambda base: (base / LS_JSON).is_file(), read_label_studio_json),
    ("crops-label-studio-csv", lambda base: (base / LS_CSV).is_file(), read_label_studio_csv),
    ("crops-labels-csv", lambda base: (base / LABELS_CSV).is_file(), read_labels_table),
]
#: How each layout is described in the error for a folder that matches none.
LAYOUT_HELP = [
    f"{LS_JSON} + {LS_CONFIG} + {IMAGES_DIR}/ (a Label Studio JSON export)",
    f"{CROPS_DIR}/ + {LS_CSV} (a Label Studio CSV export of the crops)",
    f"{CROPS_DIR}/ + {LABELS_CSV} (path,label[,location])",
]
