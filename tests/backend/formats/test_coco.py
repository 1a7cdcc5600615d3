"""Reading COCO Camera Traps as Animl exports it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from backend.errors import FileFormatError
from backend.formats.coco import coco_document, is_empty, parse_coco, read_coco, relative_box
from tests.backend.formats.animl import AnimlImage, animl_coco

IMAGES = [
    AnimlImage(
        "0a1b2c", "North Ridge", 2048, 1536, [("Grey Fox", (205, 461, 614, 384)), ("Grey Fox", (1000, 10, 100, 80))]
    ),
    AnimlImage("0a1b2d", "North Ridge", 2048, 1536, [("empty", None)]),
    AnimlImage("0a1b2e", "cam42-default", None, None, [("Chicken", None)]),
    AnimlImage("0a1b2f", "South Gully", 1920, 1080, []),
]


def test_an_animl_export_reads_by_category_name(tmp_path: Path) -> None:
    path = tmp_path / "export_coco.json"
    path.write_text(json.dumps(animl_coco(IMAGES, ["Chicken", "Grey Fox"]), indent=4))
    dataset = read_coco(path)
    assert len(dataset.images) == 4 and dataset.categories == {0: "empty", 1: "Chicken", 2: "Grey Fox"}
    by_image = dataset.annotations_of()
    fox = dataset.images["proj1:0a1b2c"]
    assert (fox.location, fox.width, fox.datetime) == ("North Ridge", 2048, "2023-05-01T12:00:56.000-07:00")
    assert [a.category for a in by_image["proj1:0a1b2c"]] == ["Grey Fox", "Grey Fox"]
    box = relative_box(by_image["proj1:0a1b2c"][0], fox.width or 0, fox.height or 0)
    assert box == pytest.approx((205 / 2048, 461 / 1536, 614 / 2048, 384 / 1536))
    [empty] = by_image["proj1:0a1b2d"]
    assert is_empty(empty, dataset.images["proj1:0a1b2d"]) and empty.bbox == (0, 0, 2048, 1536)
    [chicken] = by_image["proj1:0a1b2e"]
    assert chicken.bbox is None and relative_box(chicken, 100, 100) is None, "Animl's null box is no box"
    assert by_image["proj1:0a1b2f"] == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["annotations"][0].update(category_id=9),
            r"annotations\[0\] has category_id 9; expected one of 0 \(empty\)",
        ),
        (
            lambda d: d["annotations"][0].update(image_id="nope"),
            r"annotations\[0\] names image 'nope', which is not in images",
        ),
        (lambda d: d.pop("categories"), "the list\\(s\\) categories are missing"),
        (lambda d: d["images"][1].pop("file_name"), r"images\[1\] needs an id and a file_name"),
    ],
)
def test_malformed_files_name_the_entry(change: Callable[[dict], object], message: str) -> None:
    document = animl_coco(IMAGES, ["Chicken", "Grey Fox"])
    change(document)
    with pytest.raises(FileFormatError, match=message):
        parse_coco(document, "cct.json")


def test_a_truncated_export_says_so(tmp_path: Path) -> None:
    path = tmp_path / "export_coco.json"
    text = json.dumps(animl_coco(IMAGES, ["Chicken", "Grey Fox"]), indent=4)
    path.write_text(text[: text.index('"categories"')])
    with pytest.raises(FileFormatError, match=r"export_coco.json, line \d+: not valid JSON .* ends early"):
        read_coco(path)


def test_written_documents_read_back() -> None:
    document = coco_document(
        [{"id": "a", "file_name": "a.jpg", "width": 10, "height": 10}],
        [
            {"id": "1", "image_id": "a", "category": "fox", "bbox": [1, 1, 5, 5]},
            {"id": "2", "image_id": "a", "category": "empty"},
        ],
        ["empty", "fox"],
        description="test",
    )
    assert document["categories"] == [{"id": 0, "name": "empty"}, {"id": 1, "name": "fox"}]
    dataset = parse_coco(document, "out.json")
    assert [a.category for a in dataset.annotations] == ["fox", "empty"]
