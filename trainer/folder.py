"""Training data from files alone: the folder ``camtrap train BASE`` reads, and the files it writes.

Layouts of ``BASE`` (the first that matches is used):

=====================================================  ===============================================
files                                                  what they are
=====================================================  ===============================================
``label_studio.json`` + ``label_config.xml`` +         a Label Studio JSON export of a project and its
``images/``                                            labeling config; task images are found under
                                                       ``images/`` by file name (upload prefix ignored)
=====================================================  ===============================================

The export is read by :func:`trainer.export.parse_export`, the code the training job runs on Label
Studio's API, so every rule of the job (which annotation, which control is the species, boxes, image-level
species) holds for files too. What is written to ``BASE/logs/`` is listed in :func:`write_recipe_files`.
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
from backend.errors import ImageAccessError
from backend.labelstudio.references import reference_name, reference_path, upload_safe_name
from trainer.crops import Fetch
from trainer.errors import FolderLayoutError
from trainer.export import ExportedProject, parse_export

logger = logging.getLogger(__name__)

#: The project id of a folder's bundles under ``BASE/logs/models/``.
FOLDER_PROJECT = "folder"
#: Image file extensions looked for under a folder (case-insensitive).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
#: The recipe's class map file name (sic: comvis spells it so).
LABEL_CORRESPONDENCE_FILE = "label_correspondance.json"

LS_JSON = "label_studio.json"
LS_CONFIG = "label_config.xml"
IMAGES_DIR = "images"


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
            return reader(base, location_fields)
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
    writes it), ``metrics.json``, ``confusion_matrix.png`` and the TensorBoard event files. The bundle
    itself stays under ``logs/models/``. Each file is written to a temporary name and renamed.

    Returns:
        The files written.
    """
    manifest = read_manifest(bundle)
    logs.mkdir(parents=True, exist_ok=True)
    written = [
        _write_text(
            logs / LABEL_CORRESPONDENCE_FILE,
            json.dumps({str(i): label for i, label in enumerate(manifest.labels)}, indent=1) + "\n",
        )
    ]
    for name in (METRICS_FILE, CONFUSION_MATRIX_FILE):
        if (bundle / name).is_file():
            written.append(_copy(bundle / name, logs / name))
    for event_file in sorted((bundle / TENSORBOARD_DIR).glob("events.out.tfevents.*")):
        written.append(_copy(event_file, logs / event_file.name))
    return written


def _image_files(root: Path) -> Iterable[Path]:
    return (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _copy(source: Path, target: Path) -> Path:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    return target


#: The layouts, in the order they are tried: name, test, reader.
LAYOUTS: list[tuple[str, Callable[[Path], bool], Reader]] = [
    ("label-studio-json", lambda base: (base / LS_JSON).is_file(), read_label_studio_json),
]
#: How each layout is described in the error for a folder that matches none.
LAYOUT_HELP = [f"{LS_JSON} + {LS_CONFIG} + {IMAGES_DIR}/ (a Label Studio JSON export)"]
