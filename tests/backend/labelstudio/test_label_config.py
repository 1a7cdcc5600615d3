"""parse_label_config: what the backend finds in a labeling config, and what it refuses."""

from __future__ import annotations

import pytest

from backend.errors import LabelConfigError
from backend.labelstudio.label_config import ImageOutcome, parse_label_config


def test_parse_label_config_reads_repo_config(label_config: str) -> None:
    mapping = parse_label_config(label_config)
    assert (mapping.image_name, mapping.image_key, mapping.box_from_name) == ("image", "image", "box")
    assert mapping.categories == {"1": "animal", "2": "person", "3": "vehicle"}
    assert mapping.species_from_name == "species"
    assert mapping.species_value("grey fox") == "Grey Fox"
    assert mapping.image_choice_from_name == "image_class"
    assert mapping.outcome_value(ImageOutcome.EMPTY) == "empty"
    assert mapping.outcome_value(ImageOutcome.ANIMAL) == "animal present"
    assert mapping.outcome_value(ImageOutcome.PERSON) == "needs review"


def test_parse_label_config_maps_by_predicted_values_and_drops_unmapped() -> None:
    config = """<View><Image name="photo" value="$img"/>
      <RectangleLabels name="rect" toName="photo">
        <Label value="Tier" predicted_values="animal"/><Label value="Mensch" predicted_values="person"/>
        <Label value="Other"/>
      </RectangleLabels>
      <Choices name="sp" toName="photo" perRegion="true"><Choice value="Rotfuchs" predicted_values="Red fox"/></Choices>
    </View>"""
    mapping = parse_label_config(config)
    assert mapping.image_key == "img"
    assert mapping.categories == {"1": "Tier", "2": "Mensch"}
    assert mapping.species_value("Red fox") == "Rotfuchs"
    assert mapping.species_value("Grey Fox") is None
    assert mapping.image_choice_from_name is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("<View><Image name='i'", "cannot be parsed", id="broken-xml"),
        pytest.param(
            '<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>',
            "no <Image>",
            id="no-image",
        ),
        pytest.param(
            '<View><Image name="i" value="$image"/><Choices name="c" toName="i"><Choice value="a"/></Choices></View>',
            "no <RectangleLabels>",
            id="no-rectanglelabels",
        ),
        pytest.param(
            '<View><Image name="i" value="$image"/><RectangleLabels name="b" toName="i">'
            '<Label value="deer"/></RectangleLabels></View>',
            "predicted_values",
            id="no-matching-label",
        ),
    ],
)
def test_parse_label_config_refuses_unsupported_config(config: str, message: str) -> None:
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(config)
