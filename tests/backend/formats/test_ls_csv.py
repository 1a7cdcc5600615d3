"""Reading Label Studio's CSV export, as label-studio-sdk's converter writes it (several annotators, skips,
empty and multi-choice cells)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.errors import FileFormatError
from backend.formats.ls_csv import parse_label_cell, read_ls_csv, resolve_tasks
from tests.backend.formats.ls_exports import annotation, csv_export, task

CROP = "IMG_0001.JPG___crop00_md_v5a.0.0.pt.jpg"


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """The reference's example (user-formats.md §1.3), plus a conflict and a per-location task."""
    tasks = [
        task(
            11,
            f"/data/upload/3/1a2b3c4d-{CROP}",
            [
                annotation(101, 1, ["Moose"], "2024-05-01T10:00:00Z"),
                annotation(102, 2, ["Moose", "Reindeer"], "2024-05-02T10:00:00Z"),
            ],
        ),
        task(12, "/data/local-files/?d=crops/cam%201/IMG_0002.JPG", [annotation(103, 1, None, "2024-05-01T11:00:00Z")]),
        task(
            13,
            "/data/upload/3/deadbeef-IMG_0003.jpg",
            [annotation(104, 1, ["Moose"], "2024-05-01T11:00:00Z", cancelled=True)],
        ),
        task(14, "/data/upload/3/deadbeef-IMG_0004.jpg", []),
        task(
            15,
            "/data/upload/3/cafe0001-IMG_0005.jpg",
            [
                annotation(105, 1, ["Moose"], "2024-05-01T12:00:00Z"),
                annotation(106, 2, ["Reindeer"], "2024-05-03T12:00:00Z"),
            ],
        ),
    ]
    return csv_export(tasks, ["Moose", "Reindeer", "Other"], tmp_path)


def test_the_converter_writes_the_reference_header(export: Path) -> None:
    assert export.read_text().splitlines()[0] == (
        '"annotation_id","annotator","choice","created_at","id","image","lead_time","updated_at"'
    )


def test_each_task_gets_the_newest_single_label_and_the_rest_is_counted(export: Path) -> None:
    rows, _ = read_ls_csv(export)
    resolved = resolve_tasks(rows)
    labels = {t.task_id: t.label for t in resolved.tasks}
    # 11: the newest annotation ticks two choices, so the older single "Moose" decides
    # 15: two annotators disagree; the newest ("Reindeer") wins and the conflict is reported
    assert labels == {11: "Moose", 15: "Reindeer"}
    assert resolved.skipped == {"no_species": 1, "no_annotation": 1}  # 12: empty submit, 14: not annotated
    assert 13 not in {r.task_id for r in rows}, "the converter drops cancelled (skipped) annotations"
    [conflict] = resolved.conflicts
    assert conflict.task_id == 15 and conflict.used == "Reindeer"
    assert sorted(conflict.labels.values()) == ["Moose", "Reindeer"]
    assert next(t for t in resolved.tasks if t.task_id == 11).image == f"/data/upload/3/1a2b3c4d-{CROP}"


@pytest.mark.parametrize(
    ("cell", "labels", "multi"),
    [
        ("Moose", ("Moose",), False),
        ("", (), False),
        ('{"choices":["Moose","Reindeer"]}', ("Moose", "Reindeer"), True),
        ('{"choices":["Moose"]}', ("Moose",), False),
        ('["Red fox","Badger"]', ("Red fox", "Badger"), False),
        ("[not json", ("[not json",), False),
    ],
)
def test_label_cells(cell: str, labels: tuple[str, ...], multi: bool) -> None:
    assert parse_label_cell(cell) == (labels, multi)


def test_a_cell_with_boxes_is_refused_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "label_studio.csv"
    path.write_text('"choice","id","image"\n"Moose",1,"a.jpg"\n"[{""x"":1}]",2,"b.jpg"\n')
    with pytest.raises(FileFormatError, match=r"label_studio.csv, line 3: column choice: expected choices"):
        read_ls_csv(path)


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "label_studio.csv"
    path.write_text('"id","image","species"\n1,"a.jpg","Moose"\n')
    with pytest.raises(FileFormatError, match=r"line 1: expected a Label Studio CSV export .* choice missing"):
        read_ls_csv(path)
    rows, _ = read_ls_csv(path, label_column="species")
    assert rows[0].label == "Moose"
