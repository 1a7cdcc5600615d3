"""The honest gate: compare on unseen crops of shared species, a paired bootstrap, reject what cannot compare."""

from __future__ import annotations

import random

import pytest

from trainer.gate import GateRules, decide_against_served, decide_first, paired_bootstrap, unseen_by

RULES = GateRules(min_test_per_class=5, confidence=0.9, min_gain=0.0)


def _answers(truth: list[str], accuracy: float, rng: random.Random, species: list[str]) -> list[str]:
    """Each crop answered right with probability ``accuracy``, else as another species."""
    return [t if rng.random() < accuracy else rng.choice([s for s in species if s != t]) for t in truth]


def test_a_worse_model_on_a_tiny_test_split_is_not_promoted_by_noise():
    """Served model right 85 % of the time, new one 75 %; test splits of 5 crops per species.

    Drawn 200 times: the bare ``new > served`` rule promotes the worse model again and again, whenever
    noise favours it; the bootstrap's lower bound almost never clears 0.
    """
    species = ["deer", "fox"]
    truth = ["deer"] * 5 + ["fox"] * 5
    rng = random.Random(0)
    bare = gated = 0
    for _ in range(200):
        new, served = _answers(truth, 0.75, rng, species), _answers(truth, 0.85, rng, species)
        decision = decide_against_served("v1", truth, new, served, species, species, 0, RULES)
        assert decision.comparison["comparable"]
        bare += decision.comparison["gain"] > 0
        gated += decision.promote
    assert bare >= 30, "noise should often favour the worse model on 10 crops"
    assert gated <= 4


def test_a_clearly_better_model_is_promoted_with_its_interval():
    species = ["deer", "fox", "crow"]
    truth = [s for s in species for _ in range(40)]
    rng = random.Random(1)
    new, served = _answers(truth, 0.9, rng, species), _answers(truth, 0.6, rng, species)
    decision = decide_against_served("v1", truth, new, served, species, species, 3, RULES)
    assert decision.promote
    low, high = decision.comparison["interval"]
    assert 0 < low < decision.comparison["gain"] < high
    assert decision.comparison["excluded_seen_by_served"] == 3
    assert "90% interval" in decision.reason and "exceeds PROMOTION_MIN_GAIN 0.0" in decision.reason


def test_paired_bootstrap_agrees_with_the_point_estimate():
    truth = ["a"] * 10 + ["b"] * 10
    gain, low, high, new, old = paired_bootstrap(truth, truth, ["a"] * 20, ["a", "b"], RULES)
    assert (new, old) == (1.0, pytest.approx(1 / 3))
    assert gain == low == high == pytest.approx(2 / 3), "stratified resampling of constant answers cannot move"


@pytest.mark.parametrize(
    ("served_labels", "truth", "why"),
    [
        pytest.param(["elk", "moose"], ["deer"] * 6 + ["fox"] * 6, "species both models know", id="no-shared-species"),
        pytest.param(["deer", "fox"], ["deer"] * 6 + ["fox"] * 4, "GATE_MIN_TEST_PER_CLASS", id="too-few-crops"),
        pytest.param(["deer", "fox"], [], "none of the test crops", id="all-seen"),
    ],
)
def test_a_gate_that_cannot_compare_rejects_with_its_reason(served_labels, truth, why):
    decision = decide_against_served("p-old", truth, truth, truth, served_labels, ["deer", "fox"], 7, RULES)
    assert not decision.promote
    assert decision.reason.startswith("not comparable with the served model p-old: ")
    assert why in decision.reason and "promote it by hand" in decision.reason


def test_the_first_model_must_beat_the_majority_class():
    truth = ["deer"] * 12 + ["fox"] * 6 + ["crow"] * 6
    train = ["deer"] * 30 + ["fox"] * 10 + ["crow"] * 10
    lazy = decide_first(truth, ["deer"] * len(truth), train, RULES)
    assert not lazy.promote and lazy.reason.startswith("not better than the majority-class baseline")
    assert "'deer'" in lazy.reason
    good = decide_first(truth, truth, train, RULES)
    assert good.promote and good.reason.startswith("first model: ")
    alone = decide_first(["fox"] * 3, ["fox"] * 3, train, RULES)
    assert not alone.promote and "the test split holds 1 species (3 crops)" in alone.reason


def test_unseen_by_leaves_out_photos_units_and_places_the_served_model_trained_on(make_crop):
    fresh = make_crop("deer", 1, "north")
    same_photo = make_crop("deer", 2, "west")
    trained_place = make_crop("fox", 3, "east")
    validated_unit = make_crop("fox", 4, "south")
    unit_of = {
        fresh: "location:north",
        same_photo: "location:west",
        trained_place: "location:east|photo:task-3",
        validated_unit: "location:south",
    }
    record = {
        "units": {"location:north": "test", "location:east": "train", "location:south": "val"},
        "photos": {"task-2": ["train"], "task-1": ["test"]},
    }
    kept, excluded = unseen_by(list(unit_of), unit_of, record)
    assert kept == [fresh] and excluded == 3
