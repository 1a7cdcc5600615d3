"""The location-grouped split and the rare-species rule."""

from __future__ import annotations

from collections import Counter

import pytest

from trainer.split import MIN_LOCATIONS, Split, apply_min_examples, group_key, split_crops

SPECIES = ("fox", "deer", "crow")


def _crops(make_crop, *, locations: int | None, photos: int = 24, boxes_per_photo: int = 2):
    """``photos`` tasks of rotating species, each with several boxes, over ``locations`` sites (None: no site)."""
    crops = []
    for task_id in range(1, photos + 1):
        location = None if locations is None else f"site-{task_id % locations}"
        for _ in range(boxes_per_photo):
            crops.append(make_crop(SPECIES[task_id % len(SPECIES)], task_id, location))
    return crops


def _owners(result, by_location: bool) -> dict[str, set[Split]]:
    owners: dict[str, set[Split]] = {}
    for split, crops in result.splits.items():
        for crop in crops:
            owners.setdefault(group_key(crop, by_location), set()).add(split)
    return owners


@pytest.mark.parametrize(
    ("locations", "grouping"),
    [
        pytest.param(6, "location", id="six-locations"),
        pytest.param(None, "image", id="no-location-field"),
        pytest.param(MIN_LOCATIONS - 1, "image", id="too-few-locations"),
    ],
)
def test_split_never_puts_one_group_in_two_splits(make_crop, locations, grouping):
    crops = _crops(make_crop, locations=locations)
    result = split_crops(crops, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert result.grouping == grouping
    owners = _owners(result, by_location=grouping == "location")
    assert all(len(splits) == 1 for splits in owners.values()), owners
    photos = _owners(result, by_location=False)
    assert all(len(splits) == 1 for splits in photos.values()), "boxes of one photo straddle splits"
    assert all(result.splits[s] for s in Split)
    kept = sum(len(c) for c in result.splits.values())
    assert kept + sum(result.report["dropped_not_in_train"].values()) == len(crops)


def test_split_is_deterministic_for_a_seed(make_crop):
    crops = _crops(make_crop, locations=6)
    first = split_crops(crops, val_fraction=0.2, test_fraction=0.2, seed=3)
    second = split_crops(list(reversed(crops)), val_fraction=0.2, test_fraction=0.2, seed=3)
    assert {s: [c.path for c in v] for s, v in first.splits.items()} == {
        s: [c.path for c in v] for s, v in second.splits.items()
    }


def test_split_gives_the_training_split_the_largest_share(make_crop):
    result = split_crops(_crops(make_crop, locations=10, photos=60), val_fraction=0.15, test_fraction=0.2, seed=0)
    sizes = {s: len(c) for s, c in result.splits.items()}
    assert sizes[Split.TRAIN] > sizes[Split.TEST] and sizes[Split.TRAIN] > sizes[Split.VAL]
    assert result.labels == sorted(SPECIES)


def test_split_keeps_only_species_seen_in_training(make_crop):
    crops = [make_crop("fox", 1, "a"), make_crop("fox", 2, "b"), make_crop("fox", 3, "c"), make_crop("lynx", 4, "c")]
    crops += [make_crop("deer", 5, "a"), make_crop("deer", 6, "b")]
    result = split_crops(crops, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert all(c.label in result.labels for s in Split for c in result.splits[s])
    seen_in_train = {c.label for c in result.splits[Split.TRAIN]}
    assert set(result.labels) == seen_in_train
    kept = sum(len(c) for c in result.splits.values())
    assert kept + sum(result.report["dropped_not_in_train"].values()) == len(crops)


def test_split_refuses_fewer_than_three_groups(make_crop):
    crops = [make_crop("fox", 1), make_crop("deer", 2)]
    with pytest.raises(ValueError, match="at least 3 photos or locations"):
        split_crops(crops, val_fraction=0.2, test_fraction=0.2, seed=0)


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


def test_min_examples_keeps_the_merged_label_when_it_reaches_the_minimum(make_crop):
    crops = [make_crop("fox", i) for i in range(4)] + [make_crop("crow", 10), make_crop("crow", 11)]
    crops += [make_crop("deer", 20), make_crop("deer", 21)]
    kept, report = apply_min_examples(crops, 3, "other")
    assert Counter(c.label for c in kept) == {"fox": 4, "other": 4}
    assert report == {"dropped": {}, "merged": {"crow": 2, "deer": 2}}
