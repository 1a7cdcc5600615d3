"""``camtrap train BASE``'s crop layouts read without training: crops/ + label_studio.csv, crops/ + labels.csv."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from backend.errors import ImageAccessError
from tests.backend.formats.ls_exports import annotation, classification_config, csv_export, task
from trainer.errors import FolderLayoutError
from trainer.folder import WHOLE_IMAGE, FileIndex, read_folder

LOCATIONS = ("location", "site", "camera")


def _crop(path: Path, color: tuple[int, int, int] = (200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), color).save(path)


@pytest.fixture
def csv_base(tmp_path: Path) -> Path:
    base = tmp_path / "BASE"
    _crop(base / "crops" / "cam 1" / "IMG_0001.JPG___crop00_md_v5a.0.0.pt.jpg")
    _crop(base / "crops" / "cam 2" / "IMG_0001.JPG___crop00_md_v5a.0.0.pt.jpg")  # same name, other folder
    _crop(base / "crops" / "IMG (2).jpg")
    tasks = [
        task(
            1,
            "/data/local-files/?d=crops/cam%201/IMG_0001.JPG___crop00_md_v5a.0.0.pt.jpg",
            [annotation(11, 1, ["Moose"], "2026-01-01T00:00:00Z")],
            site="north",
        ),
        task(
            2,
            "/data/local-files/?d=crops/cam%202/IMG_0001.JPG___crop00_md_v5a.0.0.pt.jpg",
            [annotation(12, 1, ["Reindeer"], "2026-01-01T00:00:00Z")],
            site="south",
        ),
        task(3, "/data/upload/4/0badf00d-IMG_2.jpg", [annotation(13, 1, ["Moose"], "2026-01-01T00:00:00Z")], site=""),
    ]
    csv_export(tasks, ["Moose", "Reindeer"], base)
    return base


def test_label_studio_csv_layout_maps_rows_to_crops(csv_base: Path) -> None:
    dataset = read_folder(csv_base, location_fields=LOCATIONS)
    assert dataset.layout == "crops-label-studio-csv"
    tasks = {t.task_id: t for t in dataset.exported.tasks}
    assert [(t.boxes[0].bbox, t.boxes[0].species, t.location) for t in tasks.values()] == [
        (WHOLE_IMAGE, "Moose", "north"),
        (WHOLE_IMAGE, "Reindeer", "south"),
        (WHOLE_IMAGE, "Moose", None),
    ]
    crops = csv_base / "crops"
    index = FileIndex(crops)
    assert index.find(tasks[1].image) == crops / "cam 1" / "IMG_0001.JPG___crop00_md_v5a.0.0.pt.jpg"
    assert index.find(tasks[2].image) == crops / "cam 2" / "IMG_0001.JPG___crop00_md_v5a.0.0.pt.jpg"
    assert index.find(tasks[3].image) == crops / "IMG (2).jpg", "upload prefix and Django's sanitising undone"
    assert dataset.fetch(tasks[3].image, 3)[:2] == b"\xff\xd8"


def test_a_label_missing_from_label_config_names_the_line(csv_base: Path) -> None:
    (csv_base / "label_config.xml").write_text(classification_config(["Moose"]))
    with pytest.raises(FolderLayoutError, match=r"label_studio.csv, line \d: label 'Reindeer' is not a choice"):
        read_folder(csv_base, location_fields=LOCATIONS)


def test_label_spec_in_base_translates_before_training(csv_base: Path) -> None:
    (csv_base / "label_spec.json").write_text(json.dumps({"cervid": {"dataset_labels": {"ls": ["moose"]}}}))
    dataset = read_folder(csv_base, location_fields=LOCATIONS)
    assert [t.boxes[0].species for t in dataset.exported.tasks] == ["cervid", "cervid"]
    assert dataset.exported.skipped["label_not_in_label_spec"] == 1


def test_labels_csv_layout(tmp_path: Path) -> None:
    base = tmp_path / "BASE"
    _crop(base / "crops" / "a" / "x.jpg")
    _crop(base / "crops" / "y.png")
    (base / "labels.csv").write_text("path,label,location\na/x.jpg,fox,site-1\ny.png,badger,\n")
    dataset = read_folder(base, location_fields=LOCATIONS)
    assert dataset.layout == "crops-labels-csv"
    assert [(t.image, t.boxes[0].species, t.location) for t in dataset.exported.tasks] == [
        ("a/x.jpg", "fox", "site-1"),
        ("y.png", "badger", None),
    ]
    assert len(dataset.fetch("a/x.jpg", 2)) > 0
    with pytest.raises(ImageAccessError, match="no file named 'gone.jpg'"):
        dataset.fetch("gone.jpg", 3)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"labels.csv": "path,label\na.jpg,fox\n"}, "has labels.csv but no crops/ folder"),
        (
            {"crops/a.jpg": None, "labels.csv": "file_name,species\na.jpg,fox\n"},
            "labels.csv, line 1: expected the columns path,label",
        ),
        ({"crops/a.jpg": None, "labels.csv": "path,label\na.jpg,fox\nb.jpg,\n"}, r"labels.csv, line 3: empty label"),
        (
            {"crops/a.jpg": None, "label_studio.csv": '"id","image"\n1,"a.jpg"\n'},
            "label_studio.csv, line 1: expected a Label Studio CSV export",
        ),
        (
            {"crops/a.jpg": None, "label_studio.csv": '"choice","id","image"\n"fox","x","a.jpg"\n'},
            "line 2: the id column holds 'x'",
        ),
    ],
)
def test_a_wrong_layout_or_table_is_one_sentence(tmp_path: Path, files: dict[str, str | None], message: str) -> None:
    for name, text in files.items():
        if text is None:
            _crop(tmp_path / name)
        else:
            (tmp_path / name).write_text(text)
    with pytest.raises(FolderLayoutError, match=message):
        read_folder(tmp_path, location_fields=LOCATIONS)
