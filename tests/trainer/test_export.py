"""Reading Label Studio's export: which annotation, which results are species, locations, LS down."""

from __future__ import annotations

import socket

import pytest

from backend.config import Settings
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.label_config import read_label_config
from tests.trainer.fake_label_studio import box_annotation, image_annotation, label_config
from trainer.errors import ExportError
from trainer.export import choose_annotation, export_project, parse_task

INFO = read_label_config(label_config(["Chicken", "Grey Fox"]))
LOCATIONS = ("location", "site", "camera")


def _task(annotations, **data):
    return {"id": 7, "data": {"image": "/data/upload/1/a.jpg", **data}, "annotations": annotations}


def test_parse_task_reads_boxes_and_their_per_region_species():
    task = _task([box_annotation(1, "Grey Fox", (10, 20, 30, 40))], location="north")
    labeled, reason = parse_task(task, INFO, LOCATIONS)
    assert reason == ""
    assert labeled.location == "north"
    assert [b.species for b in labeled.boxes] == ["Grey Fox"]
    assert labeled.boxes[0].bbox == pytest.approx((0.1, 0.2, 0.3, 0.4))
    assert labeled.image_species is None


def test_parse_task_keeps_an_image_level_species_for_the_detector():
    labeled, _ = parse_task(_task([image_annotation(1, "Chicken")]), INFO, LOCATIONS)
    assert labeled.boxes == ()
    assert labeled.image_species == "Chicken"


def _status(value: str) -> dict:
    return {"id": "x", "type": "choices", "from_name": "status", "to_name": "image", "value": {"choices": [value]}}


def test_parse_task_ignores_image_level_choices_that_are_not_species():
    labeled, reason = parse_task(_task([{"id": 1, "result": [_status("needs review")]}]), INFO, LOCATIONS)
    assert labeled is None and reason == "no_species"


def test_parse_task_keeps_a_photo_marked_empty_for_blank_crops():
    labeled, reason = parse_task(_task([{"id": 1, "result": [_status("empty")]}]), INFO, LOCATIONS)
    assert reason == "" and labeled.empty and labeled.boxes == () and labeled.image_species is None


def test_parse_task_gives_unlabelled_boxes_the_image_level_species():
    annotation = box_annotation(1, "Grey Fox", (10, 10, 20, 20))
    annotation["result"] = annotation["result"][:1] + image_annotation(2, "Chicken")["result"]
    labeled, _ = parse_task(_task([annotation]), INFO, LOCATIONS)
    assert [b.species for b in labeled.boxes] == ["Chicken"]


@pytest.mark.parametrize(
    ("data", "location"),
    [
        pytest.param({"site": "S1", "camera": "C9"}, "S1", id="site-before-camera"),
        pytest.param({"camera": "C9"}, "C9", id="camera"),
        pytest.param({"location": "  "}, None, id="blank"),
        pytest.param({}, None, id="none"),
    ],
)
def test_parse_task_takes_the_first_location_field_present(data, location):
    labeled, _ = parse_task(_task([box_annotation(1, "Grey Fox", (10, 10, 20, 20))], **data), INFO, LOCATIONS)
    assert labeled.location == location


def test_choose_annotation_skips_cancelled_and_prefers_ground_truth():
    older_truth = {**box_annotation(1, "A", (1, 1, 5, 5)), "ground_truth": True, "updated_at": "2026-01-01"}
    newer = {**box_annotation(2, "B", (1, 1, 5, 5)), "updated_at": "2026-06-01"}
    cancelled = {**box_annotation(3, "C", (1, 1, 5, 5)), "was_cancelled": True, "updated_at": "2026-12-01"}
    assert choose_annotation([newer, cancelled, older_truth])["id"] == 1
    assert choose_annotation([newer, cancelled])["id"] == 2
    assert choose_annotation([cancelled]) is None


def test_read_label_config_finds_the_image_key_and_species_controls():
    xml = label_config(["Grey Fox"]).replace('value="$image"', 'value="$photo"')
    info = read_label_config(xml)
    assert info.image_key == "photo"
    assert info.species_from_name == "species"
    assert info.image_species_from_name == "image_species"
    assert info.image_choice_from_name == "status"


def test_export_fails_with_one_clear_sentence_when_label_studio_is_unreachable(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    settings = Settings(label_studio_url=url, label_studio_api_key="x" * 40, data_dir=tmp_path)
    with LabelStudioClient(settings) as client, pytest.raises(ExportError) as caught:
        export_project(client, "3", location_fields=LOCATIONS, base_url=url)
    message = str(caught.value)
    assert message.startswith(f"Label Studio at {url} could not export project 3 (")
    assert "LABEL_STUDIO_URL" in message and "\n" not in message
