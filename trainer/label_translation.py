"""A label spec applied to labelled tasks: the same translation for files, COCO imports and Label Studio projects.

Where a run finds its spec:

- ``camtrap train BASE``: ``BASE/label_spec.json`` when present;
- ``camtrap import-coco --label-spec FILE``: that file, applied before the training folder is written;
- a Label Studio project (the worker's export): the project's *Extra params* key ``label_spec`` (the spec
  itself as a JSON object, or the name of a file under ``DATA_DIR/label_specs/``), else the file
  ``DATA_DIR/label_specs/<project>.json`` when it exists.

The rules (matching, exclusion, ``max_count``) are those of :mod:`backend.formats.label_spec`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis

from backend.config import Settings
from backend.contracts.keys import RedisKeys
from backend.contracts.setup_record import SetupRecord
from backend.errors import FileFormatError
from backend.formats.label_spec import LabelSpec, parse_label_spec, read_label_spec
from trainer.errors import ExportError
from trainer.export import ExportedProject, LabeledBox, LabeledTask

logger = logging.getLogger(__name__)

#: Folder of per-project label specs under ``DATA_DIR``.
LABEL_SPECS_DIR = "label_specs"
#: The extra-params key naming a project's spec.
LABEL_SPEC_PARAM = "label_spec"


def apply_label_spec(exported: ExportedProject, spec: LabelSpec, *, seed: int = 0) -> ExportedProject:
    """Translate every species of every task; drop what the spec excludes or does not gather; cap ``max_count``.

    ``max_count`` counts images (tasks), as MegaDetector's pipeline does. Dropped labels are counted in
    ``skipped`` (``label_excluded``, ``label_not_in_label_spec``, ``label_over_max_count``).
    """
    skipped: Counter[str] = Counter(exported.skipped)
    translated_tasks: list[LabeledTask] = []
    for task in exported.tasks:
        boxes = []
        for box in task.boxes:
            label = spec.translate(box.species)
            if label is None:
                skipped[f"label_{spec.drop_reason(box.species)}"] += 1
            else:
                boxes.append(LabeledBox(box.bbox, label))
        image_species = spec.translate(task.image_species) if task.image_species is not None else None
        if task.image_species is not None and image_species is None and not task.boxes:
            skipped[f"label_{spec.drop_reason(task.image_species)}"] += 1
        if boxes or (image_species is not None and not task.boxes):
            translated_tasks.append(replace(task, boxes=tuple(boxes), image_species=image_species))
    main_labels = [_main_label(t) for t in translated_tasks]
    kept = spec.cap(main_labels, seed=seed)
    final = []
    for task, label in zip(translated_tasks, kept, strict=True):
        if label is None:
            skipped["label_over_max_count"] += 1
        else:
            final.append(task)
    logger.info(
        "label spec %s: %d of %d tasks kept (%s)",
        spec.source,
        len(final),
        len(exported.tasks),
        {k: v for k, v in skipped.items() if k.startswith("label_")},
    )
    return replace(exported, tasks=final, skipped=skipped)


def _main_label(task: LabeledTask) -> str:
    """The label a task counts under for ``max_count`` (its first box's, else its image-level one)."""
    return task.boxes[0].species if task.boxes else task.image_species or ""


def project_label_spec(data_dir: Path, project: str, extra_params: dict[str, Any] | None) -> LabelSpec | None:
    """A Label Studio project's label spec (see the module docstring), or None when it has none.

    Raises:
        FileFormatError: the spec named or found is malformed.
    """
    folder = data_dir / LABEL_SPECS_DIR
    value = (extra_params or {}).get(LABEL_SPEC_PARAM)
    if isinstance(value, dict):
        return parse_label_spec(value, f"extra params {LABEL_SPEC_PARAM!r} of project {project}")
    if isinstance(value, str) and value.strip():
        name = Path(value.strip()).name
        path = folder / name
        if not path.is_file():
            raise FileFormatError(
                f"project {project}'s extra params name the label spec {value!r}, but {path} does not exist: "
                f"put the file in {folder}"
            )
        return read_label_spec(path)
    default = folder / f"{project}.json"
    return read_label_spec(default) if default.is_file() else None


def spec_for_project(
    settings: Settings, connection: redis.Redis | None, keys: RedisKeys, project: str
) -> LabelSpec | None:
    """The label spec a training job of ``project`` applies (its stored extra params, then ``DATA_DIR``).

    Raises:
        ExportError: the spec named or found is malformed (one sentence naming it).
    """
    extra_params: dict[str, Any] = {}
    if connection is not None:
        try:
            record = SetupRecord.load(connection, keys, project)
        except redis.RedisError as exc:
            logger.warning("cannot read the stored /setup data of project %s: %s", project, exc)
            record = None
        extra_params = record.extra_params if record else {}
    try:
        spec = project_label_spec(settings.data_dir, project, extra_params)
    except FileFormatError as exc:
        raise ExportError(f"the label spec of project {project} cannot be used: {exc}") from exc
    if spec is not None:
        logger.info("project %s: translating labels with %s", project, spec.source)
    return spec
