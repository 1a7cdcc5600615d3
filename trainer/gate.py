"""The promotion gate: promote a new classifier only when it is measurably better on photos neither model saw.

Rules (``docs/learning.md`` explains them for project admins):

- **What is compared.** The new model's test crops, minus every crop whose photo, unit or place the
  served model trained or validated on (read from the served bundle's ``split.json``); only species both
  models know with at least ``GATE_MIN_TEST_PER_CLASS`` of those crops; at least two such species.
- **The decision.** Macro-F1 of both models over the compared species, on the very same crops (a
  prediction outside them is a miss). A stratified paired bootstrap over the crops gives the gain's
  ``GATE_CONFIDENCE`` interval; the new model is promoted when its lower bound exceeds
  ``PROMOTION_MIN_GAIN``. Noise on a small test split therefore never promotes a model.
- **Not comparable** (the served bundle cannot be loaded, records no split, or too few crops or species
  remain): ``rejected`` with the reason; a person can still promote it by hand.
- **The first model** must beat always answering the training split's most frequent species (the
  majority-class baseline) on its test split, by the same bootstrap rule (at least two test species).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from backend.contracts.bundle import BundleStatus
from trainer.crops import Crop
from trainer.grouping import SEPARATOR, place_key
from trainer.split import Split

#: Bootstrap resamples.
BOOTSTRAP_ROUNDS = 2000
#: Seed of the bootstrap (decisions are reproducible).
BOOTSTRAP_SEED = 0
#: Fewest species a comparison needs.
MIN_COMPARED_SPECIES = 2


@dataclass(frozen=True)
class GateRules:
    """The gate's settings: ``GATE_MIN_TEST_PER_CLASS``, ``GATE_CONFIDENCE``, ``PROMOTION_MIN_GAIN``."""

    min_test_per_class: int
    confidence: float
    min_gain: float
    rounds: int = BOOTSTRAP_ROUNDS


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict, its reason (as written into ``bundle.json``) and the figures behind it."""

    promote: bool
    reason: str
    comparison: dict = field(default_factory=dict)
    """``against``, ``species``, ``crops``, ``new_macro_f1``, ``other_macro_f1``, ``gain``, ``interval``..."""

    @property
    def status(self) -> BundleStatus:
        return BundleStatus.PROMOTED if self.promote else BundleStatus.REJECTED


def not_comparable(served_version: str, why: str) -> GateDecision:
    """A rejection because the two models cannot be compared honestly."""
    return GateDecision(
        False,
        f"not comparable with the served model {served_version}: {why}; promote it by hand if you trust it "
        f"(POST /models/<version>/promote)",
        {"against": "served", "comparable": False, "why": why},
    )


def trained_on(record: dict) -> tuple[set[str], set[str]]:
    """The unit keys and photos a bundle trained or validated on, from its ``split.json``."""
    seen = {Split.TRAIN.value, Split.VAL.value}
    units = {key for key, split in (record.get("units") or {}).items() if split in seen}
    photos = {photo for photo, splits in (record.get("photos") or {}).items() if seen & set(splits)}
    return units, photos


def unseen_by(crops: Sequence[Crop], unit_of: dict[Crop, str], record: dict) -> tuple[list[Crop], int]:
    """The crops whose photo, unit, enclosing unit or place the recorded model never trained on.

    Returns:
        Those crops, and how many were left out.
    """
    units, photos = trained_on(record)

    def seen(crop: Crop) -> bool:
        key = unit_of[crop]
        parts = key.split(SEPARATOR)
        enclosing = {SEPARATOR.join(parts[: i + 1]) for i in range(len(parts))}
        place = place_key(crop)
        return crop.photo in photos or bool(enclosing & units) or (place is not None and place in units)

    kept = [c for c in crops if not seen(c)]
    return kept, len(crops) - len(kept)


def decide_first(
    y_true: Sequence[str], predicted: Sequence[str], train_labels: Sequence[str], rules: GateRules
) -> GateDecision:
    """The first model of a project: better than always answering the most frequent training species."""
    majority = Counter(train_labels).most_common(1)[0][0]
    species = sorted(set(y_true))
    if len(species) < MIN_COMPARED_SPECIES:
        why = f"the test split holds {len(species)} species ({len(y_true)} crops); a comparison needs 2"
        return GateDecision(
            False,
            f"not comparable with the majority-class baseline: {why}; promote it by hand if you trust it",
            {"against": "majority-class baseline", "comparable": False, "why": why},
        )
    baseline = [majority] * len(y_true)
    gain, low, high, new, other = paired_bootstrap(y_true, predicted, baseline, species, rules)
    comparison = _figures("majority-class baseline", species, len(y_true), 0, new, other, gain, low, high, rules)
    comparison["baseline_label"] = majority
    text = (
        f"test macro-F1 {new:.4f} vs {other:.4f} for always answering {majority!r} (majority class) on "
        f"{len(y_true)} crops of {len(species)} species ({_interval(gain, low, high, rules)})"
    )
    if low > rules.min_gain:
        return GateDecision(True, f"first model: {text}", comparison)
    return GateDecision(False, f"not better than the majority-class baseline: {text}", comparison)


def decide_against_served(
    served_version: str,
    y_true: Sequence[str],
    new_pred: Sequence[str],
    served_pred: Sequence[str],
    served_labels: Sequence[str],
    new_labels: Sequence[str],
    excluded: int,
    rules: GateRules,
) -> GateDecision:
    """Compare the new and the served model on the same unseen test crops (see the module docstring)."""
    if not y_true:
        return not_comparable(
            served_version,
            f"none of the test crops is free of photos the served model trained on ({excluded} left out)",
        )
    support = Counter(y_true)
    known = set(served_labels) & set(new_labels)
    species = sorted(s for s in known if support[s] >= rules.min_test_per_class)
    if len(species) < MIN_COMPARED_SPECIES:
        shared = {s: support[s] for s in sorted(known) if support[s]}
        return not_comparable(
            served_version,
            f"fewer than {MIN_COMPARED_SPECIES} species both models know have {rules.min_test_per_class} test "
            f"crops the served model never trained on (GATE_MIN_TEST_PER_CLASS; shared species' crops: "
            f"{shared or 'none'}, {excluded} crops left out as seen by the served model)",
        )
    keep = [i for i, label in enumerate(y_true) if label in species]
    truth = [y_true[i] for i in keep]
    gain, low, high, new, other = paired_bootstrap(
        truth, [new_pred[i] for i in keep], [served_pred[i] for i in keep], species, rules
    )
    comparison = _figures(served_version, species, len(truth), excluded, new, other, gain, low, high, rules)
    text = (
        f"test macro-F1 {new:.4f} vs {other:.4f} for the served {served_version} on {len(truth)} crops of "
        f"{len(species)} shared species ({_interval(gain, low, high, rules)})"
    )
    if low > rules.min_gain:
        return GateDecision(True, text, comparison)
    return GateDecision(False, f"not better than the served model: {text}", comparison)


def paired_bootstrap(
    y_true: Sequence[str],
    pred_a: Sequence[str],
    pred_b: Sequence[str],
    species: Sequence[str],
    rules: GateRules,
) -> tuple[float, float, float, float, float]:
    """Macro-F1 gain of ``pred_a`` over ``pred_b`` and its bootstrap interval.

    Crops are resampled with replacement within each true species (the same resamples for both
    models: a paired bootstrap), ``rules.rounds`` times.

    Returns:
        ``(gain, low, high, macro_f1_a, macro_f1_b)``: the gain on the crops themselves, the bounds of
        its ``rules.confidence`` interval, and both models' macro-F1 on the crops.
    """
    index = {label: i for i, label in enumerate(species)}
    k = len(species)
    truth = np.array([index[t] for t in y_true])
    a = np.array([index.get(p, k) for p in pred_a])
    b = np.array([index.get(p, k) for p in pred_b])
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    strata = [np.flatnonzero(truth == c) for c in range(k)]
    resampled = np.concatenate([rng.choice(s, size=(rules.rounds, len(s))) for s in strata if len(s)], axis=1)
    samples = np.vstack([np.arange(len(truth))[None, :], resampled])
    f1_a, f1_b = _macro_f1(truth, a, samples, k), _macro_f1(truth, b, samples, k)
    gains = f1_a[1:] - f1_b[1:]
    tail = (1.0 - rules.confidence) / 2
    low, high = np.quantile(gains, [tail, 1.0 - tail])
    return float(f1_a[0] - f1_b[0]), float(low), float(high), float(f1_a[0]), float(f1_b[0])


def _macro_f1(truth: np.ndarray, predicted: np.ndarray, samples: np.ndarray, k: int) -> np.ndarray:
    """Macro-F1 over ``k`` species of each row of crop indices in ``samples`` (class ``k`` = a miss)."""
    rows = samples.shape[0]
    t, p = truth[samples], predicted[samples]
    offsets = (np.arange(rows) * (k + 1))[:, None]
    predicted_n = np.bincount((p + offsets).ravel(), minlength=rows * (k + 1)).reshape(rows, k + 1)[:, :k]
    actual_n = np.bincount((t + offsets).ravel(), minlength=rows * (k + 1)).reshape(rows, k + 1)[:, :k]
    hits = np.bincount((np.where(t == p, t, k) + offsets).ravel(), minlength=rows * (k + 1))
    hits = hits.reshape(rows, k + 1)[:, :k]
    denominator = predicted_n + actual_n
    f1 = np.divide(2 * hits, denominator, out=np.zeros_like(denominator, dtype=float), where=denominator > 0)
    return f1.mean(axis=1)


def _interval(gain: float, low: float, high: float, rules: GateRules) -> str:
    verdict = "exceeds" if low > rules.min_gain else "does not exceed"
    return (
        f"gain {gain:+.4f}, {rules.confidence:.0%} interval [{low:+.4f}, {high:+.4f}]: its lower bound {verdict} "
        f"PROMOTION_MIN_GAIN {rules.min_gain}"
    )


def _figures(
    against: str,
    species: list[str],
    crops: int,
    excluded: int,
    new: float,
    other: float,
    gain: float,
    low: float,
    high: float,
    rules: GateRules,
) -> dict:
    return {
        "against": against,
        "comparable": True,
        "species": species,
        "crops": crops,
        "excluded_seen_by_served": excluded,
        "new_macro_f1": round(new, 5),
        "other_macro_f1": round(other, 5),
        "gain": round(gain, 5),
        "interval": [round(low, 5), round(high, 5)],
        "confidence": rules.confidence,
        "min_gain": rules.min_gain,
        "min_test_per_class": rules.min_test_per_class,
    }
