"""The stable, grouped split: units by place, sequence or photo, hashed to a split that never moves."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from trainer.errors import EmptyDatasetError
from trainer.split import Split, apply_min_examples, split_crops

SPECIES = ("fox", "deer", "crow")


def _split(crops, project="p1"):
    return split_crops(crops, project=project, val_fraction=0.15, test_fraction=0.2, sequence_gap_s=60)


def _crops(make_crop, *, locations: int | None, photos: int = 24, boxes_per_photo: int = 2, first: int = 1):
    """``photos`` tasks of rotating species, each with several boxes, over ``locations`` sites (None: no site)."""
    crops = []
    for task_id in range(first, first + photos):
        location = None if locations is None else f"site-{task_id % locations}"
        for _ in range(boxes_per_photo):
            crops.append(make_crop(SPECIES[task_id % len(SPECIES)], task_id, location))
    return crops


def _owners(result) -> dict[str, set[Split]]:
    owners: dict[str, set[Split]] = {}
    for split, crops in result.splits.items():
        for crop in crops:
            owners.setdefault(result.unit_of[crop], set()).add(split)
            owners.setdefault(crop.photo, set()).add(split)
    return owners


@pytest.mark.parametrize(
    ("locations", "grouping"),
    [
        pytest.param(7, "location", id="seven-locations"),
        pytest.param(None, "photo", id="no-location-no-time"),
        pytest.param(2, "photo", id="too-few-locations"),
    ],
)
def test_split_never_puts_one_unit_or_photo_in_two_splits(make_crop, locations, grouping):
    crops = _crops(make_crop, locations=locations, photos=40)
    result = _split(crops)
    assert result.grouping == grouping
    assert all(len(splits) == 1 for splits in _owners(result).values())
    assert all(result.splits[s] for s in Split)
    assert sum(len(c) for c in result.splits.values()) == len(crops)


def test_growing_data_keeps_every_units_split(make_crop):
    """The issue's case: 400 crops over 8 locations, then 100 more (new photos at old and new places)."""
    first = _crops(make_crop, locations=8, photos=200)
    grown = first + _crops(make_crop, locations=10, photos=50, first=1000)
    before, after = _split(first), _split(grown)
    assert (before.grouping, after.grouping) == ("location", "location")
    assert not before.report["moved"] and not after.report["moved"]
    shared = set(before.units) & set(after.units)
    assert len(shared) == 8
    assert {k: before.units[k] for k in shared} == {k: after.units[k] for k in shared}
    trained = {c.photo for s in (Split.TRAIN, Split.VAL) for c in before.splits[s]}
    assert not trained & {c.photo for c in after.splits[Split.TEST]}, "a test photo the first model trained on"


def test_growing_data_keeps_every_photos_split_without_locations(make_crop):
    first = _crops(make_crop, locations=None, photos=150)
    grown = first + _crops(make_crop, locations=None, photos=50, first=1000)
    before, after = _split(first), _split(grown)
    assert after.grouping == "photo"
    assert {k: before.units[k] for k in before.units} == {k: after.units[k] for k in before.units}


def test_split_depends_on_the_project_not_on_the_order_of_crops(make_crop):
    crops = _crops(make_crop, locations=6, photos=60)
    forward, backward = _split(crops), _split(list(reversed(crops)))
    assert forward.units == backward.units
    assert _split(crops, project="p2").units != forward.units


def test_a_species_seen_at_one_location_is_kept_and_split_inside_itself(make_crop):
    """A (deer 40, fox 30), B (fox 20), C (bear 15): bear lives at C only."""
    crops = [make_crop("deer", i, "A") for i in range(40)]
    crops += [make_crop("fox", 100 + i, "A") for i in range(30)] + [make_crop("fox", 200 + i, "B") for i in range(20)]
    crops += [make_crop("bear", 300 + i, "C") for i in range(15)]
    result = _split(crops)
    assert result.labels == ["bear", "deer", "fox"]
    assert result.report["split_inside"]["bear"] == "photo"
    assert result.splits[Split.VAL] and result.splits[Split.TEST]
    bear = Counter(s.value for s, crops in result.splits.items() for c in crops if c.label == "bear")
    assert bear["train"] >= 1 and bear["test"] >= 1


def test_bursts_never_straddle_splits_when_locations_are_few(make_crop):
    """Two cameras, bursts of three photos 2 s apart, bursts 10 minutes apart: the unit is the sequence."""
    crops = []
    for burst in range(30):
        for frame in range(3):
            task_id = burst * 3 + frame
            crop = make_crop(SPECIES[burst % 3], task_id, f"cam-{burst % 2}")
            crops.append(replace(crop, taken_at=1_700_000_000 + burst * 600 + frame * 2))
    result = _split(crops)
    assert result.grouping == "sequence"
    assert len(result.units) == 30
    split_of_burst: dict[int, set[Split]] = {}
    for split, members in result.splits.items():
        for crop in members:
            split_of_burst.setdefault(crop.task_id // 3, set()).add(split)
    assert all(len(splits) == 1 for splits in split_of_burst.values())


def test_extra_training_views_stay_in_training(make_crop):
    crops = _crops(make_crop, locations=6, photos=60)
    extra = [replace(c, path=c.path.with_name(f"j{c.path.name}"), source="jitter", train_only=True) for c in crops]
    result = _split(crops + extra)
    for split in (Split.VAL, Split.TEST):
        assert not any(c.train_only for c in result.splits[split])
    assert sum(c.train_only for c in result.splits[Split.TRAIN]) == sum(
        1 for c in extra if result.units[result.unit_of[c]] is Split.TRAIN
    )


def test_an_empty_validation_split_is_filled_or_a_clear_error(make_crop):
    three = [make_crop("fox", 1, "a"), make_crop("deer", 2, "b"), make_crop("fox", 3, "c")]
    with pytest.raises(EmptyDatasetError, match="split would be empty"):
        _split(three)
    crops = _crops(make_crop, locations=None, photos=12)
    result = _split(crops)
    assert all(result.splits[s] for s in Split)
    assert set(result.report["moved"].values()) <= {"train->val", "train->test", "val->train", "test->train"}


def test_split_record_names_every_unit_and_photo(make_crop):
    crops = _crops(make_crop, locations=7, photos=42)
    result = _split(crops)
    record = result.record("p1", 60)
    assert record["grouping"] == "location" and record["project"] == "p1"
    assert set(record["units"]) == {f"location:site-{i}" for i in range(7)}
    assert set(record["photos"]) == {c.photo for c in crops}
    assert all(len(v) == 1 for v in record["photos"].values())


@pytest.mark.parametrize(
    ("other_label", "expected_labels", "dropped", "merged"),
    [
        pytest.param(None, {"fox": 5}, {"crow": 2, "deer": 1}, {}, id="dropped"),
        pytest.param("other", {"fox": 5}, {"other": 3}, {"crow": 2, "deer": 1}, id="merged-but-still-rare"),
    ],
)
def test_min_examples_drops_or_merges_rare_species(make_crop, other_label, expected_labels, dropped, merged):
    crops = [make_crop("fox", i) for i in range(5)] + [make_crop("crow", 10), make_crop("crow", 11)]
    crops.append(make_crop("deer", 20))
    kept, report = apply_min_examples(crops, 4, other_label)
    assert Counter(c.label for c in kept) == expected_labels
    assert report == {"dropped": dropped, "merged": merged}


def test_min_examples_pools_rare_species_into_other_and_ignores_extra_views(make_crop):
    crops = [make_crop("fox", i) for i in range(4)] + [make_crop("crow", 10), make_crop("crow", 11)]
    crops += [make_crop("deer", 20), make_crop("deer", 21)]
    crops += [replace(make_crop("crow", 12), train_only=True, source="jitter") for _ in range(5)]
    kept, report = apply_min_examples(crops, 3, "other")
    assert Counter(c.label for c in kept if not c.train_only) == {"fox": 4, "other": 4}
    assert report == {"dropped": {}, "merged": {"crow": 2, "deer": 2}}
