"""LS results and MegaDetector JSON built from detections, validated with label-studio-sdk."""

from __future__ import annotations

import pytest
from label_studio_sdk.label_interface import LabelInterface

from backend.formats.megadetector import md_image, md_output
from backend.labelstudio.label_config import ImageOutcome, parse_label_config
from backend.labelstudio.predictions import image_outcome, ls_prediction, unmapped_species
from backend.vision.classifier import Prediction
from backend.vision.detector import Detection
from backend.vision.pipeline import Box
from backend.vision.thresholds import Thresholds

THRESHOLDS = Thresholds(detection=0.01, classify=0.1, show=0.2, species=0.3)


def box(category: str, conf: float, bbox: tuple = (0.1, 0.2, 0.3, 0.4), species: Prediction | None = None) -> Box:
    return Box(Detection(category, conf, bbox), species)


def test_ls_prediction_links_species_to_box_and_validates(label_config: str) -> None:
    boxes = [
        box("1", 0.9, species=Prediction("Grey Fox", 0.8)),
        box("1", 0.5, species=Prediction("Grey Fox", 0.1)),  # species below its threshold: box only
        box("2", 0.15),  # below the show threshold
        box("3", 0.4, bbox=(0.95, 0.9, 0.2, 0.3)),  # reaches past the border: clamped
    ]
    prediction = ls_prediction(boxes, parse_label_config(label_config), 1920, 1080, "md_x+v1", THRESHOLDS)
    assert LabelInterface(label_config).validate_prediction(prediction, return_errors=True) == []
    result = prediction["result"]
    regions = [r for r in result if r["type"] == "rectanglelabels"]
    assert [r["value"]["rectanglelabels"] for r in regions] == [["animal"], ["animal"], ["vehicle"]]
    species = [r for r in result if r["from_name"] == "species"]
    assert len(species) == 1
    assert species[0]["id"] == regions[0]["id"]
    assert species[0]["value"]["choices"] == ["Grey Fox"]
    assert {k: species[0]["value"][k] for k in ("x", "y", "width", "height")} == {
        k: regions[0]["value"][k] for k in ("x", "y", "width", "height")
    }
    clamped = regions[2]["value"]
    assert clamped["x"] == 95.0 and clamped["x"] + clamped["width"] <= 100.0
    assert clamped["y"] + clamped["height"] <= 100.0
    assert regions[0]["original_width"] == 1920 and regions[0]["original_height"] == 1080
    image_level = [r for r in result if r["from_name"] == "image_class"]
    assert image_level[0]["value"]["choices"] == ["animal present"]
    assert prediction["score"] == pytest.approx((0.9 + 0.5 + 0.4) / 3, abs=1e-3)
    assert prediction["model_version"] == "md_x+v1"


def test_ls_prediction_drops_categories_the_config_does_not_map() -> None:
    config = """<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">
      <Label value="animal"/></RectangleLabels></View>"""
    prediction = ls_prediction([box("2", 0.9), box("1", 0.8)], parse_label_config(config), 100, 100, "v", THRESHOLDS)
    assert [r["value"]["rectanglelabels"] for r in prediction["result"]] == [["animal"]]
    assert LabelInterface(config).validate_prediction(prediction)


@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        pytest.param([], ImageOutcome.EMPTY, id="nothing"),
        pytest.param([box("1", 0.05)], ImageOutcome.EMPTY, id="below-classify"),
        pytest.param([box("1", 0.15)], ImageOutcome.REVIEW, id="faint"),
        pytest.param([box("2", 0.9), box("1", 0.3)], ImageOutcome.ANIMAL, id="animal-wins"),
        pytest.param([box("2", 0.9)], ImageOutcome.PERSON, id="person"),
    ],
)
def test_image_outcome_by_shown_boxes(boxes: list[Box], expected: ImageOutcome) -> None:
    assert image_outcome(boxes, THRESHOLDS)[0] is expected


def test_md_output_has_batch_format_fields() -> None:
    images = [
        md_image("a.jpg", [box("1", 0.91234, species=Prediction("Chicken", 0.7))], ["Grey Fox", "Chicken"]),
        md_image("b.jpg", None, [], failure="not an image file"),
    ]
    output = md_output(images, "/models/md_v5a.0.0.pt", ["Grey Fox", "Chicken"], "md_v5a+v1")
    assert output["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    assert output["classification_categories"] == {"0": "Grey Fox", "1": "Chicken"}
    assert output["info"]["format_version"] and output["info"]["detector"] == "md_v5a.0.0.pt"
    first, second = output["images"]
    assert first["detections"][0] == {
        "category": "1",
        "conf": 0.912,
        "bbox": [0.1, 0.2, 0.3, 0.4],
        "classifications": [["1", 0.7]],
    }
    assert second["detections"] is None and second["failure"] == "image access failure"


IMAGE_SPECIES_CONFIG = """<View><Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image"><Label value="animal"/><Label value="person"/></RectangleLabels>
  <Choices name="species" toName="image"><Choice value="Red Deer"/><Choice value="Grey Fox"/></Choices>
  <Choices name="verdict" toName="image"><Choice value="empty"/><Choice value="animal"/></Choices>
</View>"""


def test_an_image_level_species_control_is_filled_by_the_top_animal_box() -> None:
    mapping = parse_label_config(IMAGE_SPECIES_CONFIG)
    assert (mapping.species_from_name, mapping.image_species_from_name) == (None, "species")
    boxes = [
        box("1", 0.6, species=Prediction("grey fox", 0.9)),
        box("1", 0.95, species=Prediction("red deer", 0.7)),
        box("2", 0.99),
    ]
    prediction = ls_prediction(boxes, mapping, 100, 100, "v", THRESHOLDS)
    assert LabelInterface(IMAGE_SPECIES_CONFIG).validate_prediction(prediction, return_errors=True) == []
    [species] = [r for r in prediction["result"] if r["from_name"] == "species"]
    assert species["value"] == {"choices": ["Red Deer"]} and species["score"] == 0.7
    [verdict] = [r for r in prediction["result"] if r["from_name"] == "verdict"]
    assert verdict["value"] == {"choices": ["animal"]}


def test_a_blank_guess_is_served_as_no_species(label_config: str) -> None:
    mapping = parse_label_config(label_config)
    prediction = ls_prediction([box("1", 0.9, species=Prediction("blank", 0.99))], mapping, 100, 100, "v", THRESHOLDS)
    assert [r["type"] for r in prediction["result"]] == ["rectanglelabels", "choices"]
    assert prediction["result"][1]["from_name"] == "image_class"
    assert unmapped_species([box("1", 0.9, species=Prediction("blank", 0.99))], mapping, THRESHOLDS) == []
    shown_unknown = [
        box("1", 0.9, species=Prediction("Snow Leopard", 0.8)),
        box("1", 0.1, species=Prediction("Yeti", 0.9)),
    ]
    assert unmapped_species(shown_unknown, mapping, THRESHOLDS) == ["Snow Leopard"]
