"""Label specs in both flavours (MegaDetector's classification pipeline, TrapTagger's) and label_index.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.errors import FileFormatError
from backend.formats.label_spec import read_label_index, read_label_spec, write_label_index

#: MegaDetector's syntax (user-formats.md §5.1): taxa, dataset_labels, exclude, max_count, prioritize.
MD_SPEC = {
    "cervid": {
        "taxa": [{"level": "family", "name": "cervidae"}],
        "dataset_labels": {"survey_a": ["deer", "elk"]},
        "max_count": 2,
        "prioritize": [["survey_a"]],
    },
    "bird": {
        "taxa": [{"level": "class", "name": "aves"}],
        "dataset_labels": {"survey_a": ["turkey", "crow"]},
        "exclude": {"dataset_labels": {"survey_a": ["turkey"]}},
    },
}
#: TrapTagger's generate_label_spec output (§5.3): dataset_labels only, every dataset present, compact.
TRAPTAGGER_SPEC = (
    '{"bird":{"dataset_labels":{"Survey A":["hornbill","guineafowl"],"Survey B":[]}},'
    '"impala":{"dataset_labels":{"Survey A":["impala"],"Survey B":["impala "]}}}'
)


def test_megadetector_spec_translates_excludes_and_caps(tmp_path: Path) -> None:
    path = tmp_path / "label_spec.json"
    path.write_text(json.dumps(MD_SPEC, indent=2))
    spec = read_label_spec(path)
    assert spec.labels == ["cervid", "bird"]
    assert [spec.translate(x) for x in ("Deer", " elk ", "Cervidae", "crow", "turkey", "fox")] == [
        "cervid",
        "cervid",
        "cervid",
        "bird",
        None,
        None,
    ]
    assert spec.drop_reason("turkey") == "excluded"
    assert spec.drop_reason("fox") == "not_in_label_spec"
    kept = spec.select(["deer", "elk", "deer", "crow", "deer"], seed=3)
    assert kept.count("cervid") == 2, "max_count caps the images of a label"
    assert kept[3] == "bird"
    assert kept == spec.select(["deer", "elk", "deer", "crow", "deer"], seed=3), "the choice is seeded"


def test_traptagger_spec_with_empty_dataset_lists(tmp_path: Path) -> None:
    path = tmp_path / "label_spec.json"
    path.write_text(TRAPTAGGER_SPEC)
    spec = read_label_spec(path)
    assert spec.labels == ["bird", "impala"]
    assert spec.translate("Hornbill") == "bird"
    assert spec.translate("impala") == "impala"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"bird": {"dataset_labels": ["crow"]}}', "training label 'bird': dataset_labels must map dataset names"),
        ('{"bird": {"labels": {}}}', "training label 'bird': unknown key"),
        ('{"bird": {"dataset_labels": {"a": ["crow"]}, "prioritize": [["a"]]}}', "only valid together with max_count"),
        (
            '{"bird": {"dataset_labels": {"a": ["crow"]}}, "corvid": {"dataset_labels": {"b": ["Crow"]}}}',
            "'crow' is gathered by both 'bird' and 'corvid'",
        ),
        ('{"bird": {\n"dataset_labels": oops}}', "line 2: not valid JSON"),
    ],
)
def test_malformed_specs_name_the_file_and_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "label_spec.json"
    path.write_text(text)
    with pytest.raises(FileFormatError, match=message) as raised:
        read_label_spec(path)
    assert str(path) in str(raised.value)


def test_label_index_round_trip_keeps_the_given_order(tmp_path: Path) -> None:
    path = write_label_index(tmp_path / "label_index.json", ["zebra", "aardvark"])
    assert path.read_text() == '{\n "0": "zebra",\n "1": "aardvark"\n}\n'
    assert read_label_index(path) == ["zebra", "aardvark"]
    path.write_text('{"1": "b", "0": "a"}')
    assert read_label_index(path) == ["a", "b"], "keys, not file order, give the index"
    path.write_text('{"0": "a", "2": "c"}')
    with pytest.raises(FileFormatError, match="key 1 is missing"):
        read_label_index(path)
