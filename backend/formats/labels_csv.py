"""``labels.csv``: the plainest training table, ``path,label[,location]``, one crop (or photo) per row.

``path`` is relative to the folder the table describes (``BASE/crops/``), forward slashes; ``filepath`` is
accepted for it (the shared ENA24 table and TrapTagger's import use that name). ``location`` is optional:
when present, training holds out whole locations. ``camtrap import-coco`` writes this table.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from backend.errors import FileFormatError
from backend.formats.atomic import write_text_atomically

#: The header :func:`write_labels_csv` writes.
COLUMNS = ("path", "label", "location")
#: Other names accepted for ``path`` when reading.
PATH_ALIASES = ("path", "filepath", "file")


@dataclass(frozen=True)
class LabelRow:
    """One labelled file."""

    line: int
    path: str
    label: str
    location: str | None = None


def read_labels_csv(path: Path) -> list[LabelRow]:
    """Read ``path,label[,location]`` rows.

    Raises:
        FileFormatError: the header lacks ``path`` or ``label``, or a row has an empty path or label (the
            message names the file and the line).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in reader.fieldnames or []]
            path_column = next((name for name in PATH_ALIASES if name in header), None)
            if path_column is None or "label" not in header:
                raise FileFormatError(
                    f"{path}, line 1: expected the columns path,label[,location]; found {','.join(header) or 'nothing'}"
                )
            reader.fieldnames = header
            rows = []
            for record in reader:
                file = (record.get(path_column) or "").strip().replace("\\", "/")
                label = (record.get("label") or "").strip()
                if not file or not label:
                    empty = "path" if not file else "label"
                    raise FileFormatError(
                        f"{path}, line {reader.line_num}: empty {empty}; every row needs a path and a label"
                    )
                location = (record.get("location") or "").strip() or None
                rows.append(LabelRow(reader.line_num, file, label, location))
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path} is not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise FileFormatError(f"{path}: not a readable CSV file ({exc})") from exc
    return rows


def write_labels_csv(path: Path, rows: Iterable[LabelRow]) -> Path:
    """Write ``path,label,location`` to ``path`` atomically (a temporary file renamed into place)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([row.path, row.label, row.location or ""])
    write_text_atomically(path, buffer.getvalue())
    return path
