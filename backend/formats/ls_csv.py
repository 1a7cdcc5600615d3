"""Label Studio's CSV export of a Choices project: one label per task, with the rules written down.

The file is what label-studio-sdk's ``converter/exports/csv2.py`` writes (``../shared/docs/user-formats.md``
§1.2-1.3): a header sorted alphabetically, ``QUOTE_NONNUMERIC``, one row per kept annotation, newest first,
several rows per task when several people annotated it, and one row with empty annotation columns for a
task nobody annotated. Columns are found by name, never by position.

The label cell (:func:`parse_label_cell`):

=======================================  =============================================================
cell                                     read as
=======================================  =============================================================
``Moose``                                one label
``""``                                   no label (an empty submit, or an unannotated task)
``{"choices": ["Moose", "Reindeer"]}``   several choices in one annotation: ambiguous, not used
``["Red fox", "Red fox"]``               per-region results: one label if they agree, else not used
=======================================  =============================================================

Which annotation of a task counts (:func:`resolve_tasks`): the newest row that gives exactly one label,
as the training job takes the latest annotation of a task. Rows of the same task that give another label
are reported as conflicts (task id, lines, labels), never silently merged.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import FileFormatError

logger = logging.getLogger(__name__)

#: The columns of the "Image Classification" template's export that hold the image and the label.
IMAGE_COLUMN = "image"
LABEL_COLUMN = "choice"
TASK_COLUMN = "id"


@dataclass(frozen=True)
class CsvRow:
    """One row of the export: one annotation of one task (or a task without annotation)."""

    line: int
    task_id: int
    image: str
    annotation_id: str
    created_at: str
    labels: tuple[str, ...]
    """The labels the cell names (empty: none)."""
    multi_choice: bool
    """The cell is a ``{"choices": [...]}`` object (one annotation ticking several choices)."""
    data: dict[str, str]
    """Every column of the row (task data keys such as ``location`` among them)."""

    @property
    def label(self) -> str | None:
        """The single label of this row, or None when it names none, several, or conflicting ones."""
        if self.multi_choice or len(set(self.labels)) != 1:
            return None
        return self.labels[0]


@dataclass(frozen=True)
class TaskLabel:
    """The label of one task, from the row that decided it."""

    task_id: int
    image: str
    label: str
    row: CsvRow


@dataclass(frozen=True)
class Conflict:
    """Rows of one task that name different labels; ``used`` is the one kept (the newest)."""

    task_id: int
    used: str
    labels: dict[int, str]
    """Line -> label of every usable row of the task."""


@dataclass
class CsvLabels:
    """The tasks of an export with one label each, and what was left out and why."""

    tasks: list[TaskLabel] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    conflicts: list[Conflict] = field(default_factory=list)


def read_ls_csv(
    path: Path, *, label_column: str = LABEL_COLUMN, image_column: str = IMAGE_COLUMN
) -> tuple[list[CsvRow], list[str]]:
    """Read a Label Studio CSV export.

    Args:
        path: The ``.csv`` file.
        label_column: The Choices control's name (``choice`` in the Image Classification template).
        image_column: The task data key of the image (``image``).

    Returns:
        The rows in file order, and the header.

    Raises:
        FileFormatError: not UTF-8, a column is missing, a task id is not an integer, or a label cell is
            not a Choices value (the message names the file and the line).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            missing = [c for c in (TASK_COLUMN, image_column, label_column) if c not in header]
            if missing:
                raise FileFormatError(
                    f"{path}, line 1: expected a Label Studio CSV export with the columns {TASK_COLUMN}, "
                    f"{image_column} and {label_column}; {', '.join(missing)} missing (found: {', '.join(header)})"
                )
            rows = [_row(path, reader.line_num, record, label_column, image_column) for record in reader]
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path} is not UTF-8 text ({exc.reason}): export it again from Label Studio") from exc
    except csv.Error as exc:
        raise FileFormatError(f"{path}: not a readable CSV file ({exc})") from exc
    return rows, header


def parse_label_cell(cell: str) -> tuple[tuple[str, ...], bool]:
    """A label cell -> ``(labels, multi_choice)``.

    Raises:
        ValueError: the cell holds something else than Choices values (boxes, text areas...).
    """
    text = cell.strip()
    if not text:
        return (), False
    if text[0] in "[{":
        try:
            value = json.loads(text)
        except ValueError:
            return (text,), False
        if isinstance(value, dict):
            choices = value.get("choices")
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise ValueError(f'expected a Choices value {{"choices": [...]}}, found {text[:80]}')
            return tuple(choices), len(choices) > 1
        if isinstance(value, list):
            if not all(isinstance(c, str) for c in value):
                raise ValueError(
                    f"expected choices, found another control's results ({text[:80]}): export a Choices "
                    "project, or use the JSON export for boxes"
                )
            return tuple(value), False
    return (text,), False


def resolve_tasks(rows: Iterable[CsvRow]) -> CsvLabels:
    """One label per task: the newest row with exactly one label (see the module docstring)."""
    by_task: dict[int, list[CsvRow]] = defaultdict(list)
    for row in rows:
        by_task[row.task_id].append(row)
    result = CsvLabels()
    for task_id, task_rows in sorted(by_task.items()):
        newest_first = sorted(task_rows, key=lambda r: (r.created_at, _as_int(r.annotation_id)), reverse=True)
        usable = [r for r in newest_first if r.label is not None]
        if not usable:
            result.skipped[_skip_reason(task_rows)] += 1
            continue
        chosen = usable[0]
        assert chosen.label is not None
        result.tasks.append(TaskLabel(task_id, chosen.image, chosen.label, chosen))
        if len({r.label for r in usable}) > 1:
            result.conflicts.append(Conflict(task_id, chosen.label, {r.line: r.label or "" for r in usable}))
    if result.conflicts:
        shown = "; ".join(
            f"task {c.task_id} (lines {', '.join(f'{line}: {label}' for line, label in sorted(c.labels.items()))})"
            for c in result.conflicts[:10]
        )
        logger.warning(
            "%d task(s) were labelled differently by different annotators; the newest annotation is used: %s%s",
            len(result.conflicts),
            shown,
            " ..." if len(result.conflicts) > 10 else "",
        )
    return result


def _as_int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return -1


def _skip_reason(rows: Sequence[CsvRow]) -> str:
    if all(not r.annotation_id for r in rows):
        return "no_annotation"
    if any(r.multi_choice for r in rows):
        return "multi_choice"
    if any(len(set(r.labels)) > 1 for r in rows):
        return "several_labels"
    return "no_species"


def _row(path: Path, line: int, record: dict[str, str | None], label_column: str, image_column: str) -> CsvRow:
    data = {k: (v or "") for k, v in record.items() if k is not None}
    try:
        task_id = int(float(data[TASK_COLUMN]))
    except ValueError as exc:
        raise FileFormatError(
            f"{path}, line {line}: the {TASK_COLUMN} column holds {data[TASK_COLUMN]!r}; "
            "expected a task id (an integer)"
        ) from exc
    try:
        labels, multi = parse_label_cell(data[label_column])
    except ValueError as exc:
        raise FileFormatError(f"{path}, line {line}: column {label_column}: {exc}") from exc
    return CsvRow(
        line=line,
        task_id=task_id,
        image=data[image_column].strip(),
        annotation_id=data.get("annotation_id", "").strip(),
        created_at=data.get("created_at", "").strip(),
        labels=tuple(label.strip() for label in labels if label.strip()),
        multi_choice=multi,
        data=data,
    )
