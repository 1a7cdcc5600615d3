"""Reading Label Studio's export: which annotation, which results are species, locations, LS down."""

from __future__ import annotations

import socket
from collections import Counter

import pytest

from backend.config import Settings
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.label_config import read_label_config
from tests.trainer.fake_label_studio import TOKEN, box_annotation, image_annotation, label_config
from trainer.boxes import ls_rectangle
from trainer.errors import ExportError
from trainer.export import choose_annotation, export_project, parse_task

INFO = read_label_config(label_config(["Chicken", "Grey Fox"]))
LOCATIONS = ("location", "site", "camera")


def _task(annotations, predictions=(), **data):
    task = {"id": 7, "data": {"image": "/data/upload/1/a.jpg", **data}, "annotations": annotations}
    return {**task, "predictions": list(predictions)}


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


SEX_FIRST = label_config(["Grey Fox", "Chicken"]).replace(
    '<Choices name="species"',
    '<Choices name="sex" toName="image" perRegion="true"><Choice value="female"/><Choice value="male"/></Choices>\n'
    '  <Choices name="species"',
)


def test_a_species_and_sex_config_learns_the_species_whatever_the_order_of_results():
    mapping = read_label_config(SEX_FIRST)
    assert mapping.species_from_name == "species"
    annotation = box_annotation(1, "Grey Fox", (10, 20, 30, 40))
    sex = {**annotation["result"][1], "from_name": "sex", "value": {"choices": ["female"]}}
    annotation["result"].append(sex)
    labeled, _ = parse_task(_task([annotation]), mapping, LOCATIONS)
    assert [b.species for b in labeled.boxes] == ["Grey Fox"]


def test_labels_are_mapped_onto_the_configs_choices_and_unknown_ones_counted():
    unmapped: Counter[str] = Counter()
    tasks = [
        _task([box_annotation(1, "grey fox", (10, 20, 30, 40))]),
        _task([box_annotation(2, "Snow Leopard", (10, 20, 30, 40))]),
        _task([image_annotation(3, "CHICKEN")]),
    ]
    parsed = [parse_task(task, INFO, LOCATIONS, {}, unmapped) for task in tasks]
    assert [b.species for b in parsed[0][0].boxes] == ["Grey Fox"]
    assert parsed[1] == (None, "no_species")
    assert parsed[2][0].image_species == "Chicken"
    assert unmapped == {"Snow Leopard": 1}


def test_a_rotated_rectangle_counts_as_its_axis_aligned_hull():
    assert ls_rectangle({"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0}) == pytest.approx(
        (0.1, 0.2, 0.3, 0.4)
    )
    # A 200 x 100 px box turned 90 degrees clockwise about its top-left corner at (400, 300) px.
    value = {"x": 40.0, "y": 30.0, "width": 20.0, "height": 10.0, "rotation": 90}
    assert ls_rectangle(value, 1000, 1000) == pytest.approx((0.3, 0.3, 0.1, 0.2))
    turned = {"x": 50.0, "y": 50.0, "width": 10.0, "height": 10.0, "rotation": 45}
    x, y, w, h = ls_rectangle(turned, 1000, 1000)
    assert (w, h) == pytest.approx((0.1 * 2**0.5, 0.1 * 2**0.5))


def test_deleted_detector_boxes_and_photos_marked_empty_give_blank_boxes():
    kept, deleted = (10.0, 10.0, 30.0, 30.0), (60.0, 60.0, 20.0, 20.0)
    prediction = {
        "id": 55,
        "result": [
            {"id": f"md-{i}", "type": "rectanglelabels", "value": {**_box(b), "rectanglelabels": ["animal"]}}
            for i, b in enumerate((kept, deleted))
        ],
    }
    edited = box_annotation(1, "Grey Fox", (11.0, 9.0, 30.0, 31.0))
    labeled, _ = parse_task({**_task([{**edited, "parent_prediction": 55}])}, INFO, LOCATIONS, {55: prediction})
    assert labeled.from_prediction and labeled.shown == (
        pytest.approx((0.1, 0.1, 0.3, 0.3)),
        pytest.approx((0.6,) * 2 + (0.2,) * 2),
    )
    assert labeled.blanks == (pytest.approx((0.6, 0.6, 0.2, 0.2)),)
    assert labeled.boxes[0].detector_bbox == pytest.approx((0.1, 0.1, 0.3, 0.3)), "MegaDetector's box for the fox"
    empty = {"id": 2, "result": [_status("empty")], "parent_prediction": 55}
    marked, _ = parse_task(_task([empty], predictions=[prediction]), INFO, LOCATIONS)
    assert len(marked.blanks) == 2
    whole = {**image_annotation(3, "Chicken"), "parent_prediction": 55}
    labelled_as_a_whole, _ = parse_task(_task([whole]), INFO, LOCATIONS, {55: prediction})
    assert labelled_as_a_whole.blanks == (), "a photo labelled as a whole may hold its animal in any box"


def _box(box):
    return dict(zip(("x", "y", "width", "height"), box, strict=True))


def test_export_reads_the_predictions_annotations_started_from(synthetic_ls, tmp_path):
    fake, url = synthetic_ls
    deleted = {"x": 70.0, "y": 70.0, "width": 20.0, "height": 20.0}
    fake.predictions.append(
        {
            "project": 2,
            "task": 1,
            "result": [{"id": "md-0", "type": "rectanglelabels", "value": {**deleted, "rectanglelabels": ["animal"]}}],
        }
    )
    fake.tasks[0]["annotations"][0]["parent_prediction"] = 1
    settings = Settings(label_studio_url=url, label_studio_api_key=TOKEN, data_dir=tmp_path)
    with LabelStudioClient(settings) as client:
        exported = export_project(client, "2", location_fields=LOCATIONS, base_url=url)
    first = next(t for t in exported.tasks if t.task_id == 1)
    assert first.blanks == (pytest.approx((0.7, 0.7, 0.2, 0.2)),)
    assert exported.counts()["blank_boxes"] == 1
