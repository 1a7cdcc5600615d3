"""Train / validation / test split by location, so the test measures what a new camera would see.

Crops are grouped by their task's location (``location``, ``site`` or ``camera`` in the task data,
see ``LOCATION_FIELDS``); a task without one forms its own group, so the boxes of one photo never
straddle two splits. Whole groups are then dealt to the splits, largest first, each to the split
whose per-species quota it fills best. With fewer than :data:`MIN_LOCATIONS` locations a location
split is impossible, and the photos themselves become the groups (logged and reported).

Species with fewer than ``MIN_EXAMPLES_PER_CLASS`` crops are dropped, or merged into
``OTHER_LABEL`` when it is set; species absent from the training split are dropped from val/test.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from trainer.crops import Crop

logger = logging.getLogger(__name__)

#: Fewer distinct locations than this and crops are grouped by photo instead.
MIN_LOCATIONS = 3


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


@dataclass
class SplitResult:
    """The three splits, the label list (class index order) and what was done, for the report."""

    splits: dict[Split, list[Crop]]
    labels: list[str]
    grouping: str
    """``location``, or ``image`` (no or too few locations)."""
    report: dict = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """Crops per species in each split."""
        return {s.value: dict(sorted(Counter(c.label for c in crops).items())) for s, crops in self.splits.items()}


def group_key(crop: Crop, by_location: bool) -> str:
    """The split unit of a crop: its location, or its photo."""
    if by_location and crop.location:
        return f"location:{crop.location}"
    return f"image:{crop.task_id}"


def apply_min_examples(
    crops: Sequence[Crop], min_examples: int, other_label: str | None
) -> tuple[list[Crop], dict[str, dict[str, int]]]:
    """Drop (or merge into ``other_label``) the species with fewer than ``min_examples`` crops.

    Returns:
        The kept crops and ``{"dropped": {species: n}, "merged": {species: n}}``.
    """
    totals = Counter(c.label for c in crops)
    rare = {label for label, n in totals.items() if n < min_examples and label != other_label}
    merged: dict[str, int] = {}
    if other_label and rare:
        merged = {label: totals[label] for label in sorted(rare)}
        crops = [replace(c, label=other_label) if c.label in rare else c for c in crops]
        totals = Counter(c.label for c in crops)
        rare = {label for label, n in totals.items() if n < min_examples}
    dropped = {label: totals[label] for label in sorted(rare)}
    kept = [c for c in crops if c.label not in rare]
    if dropped or merged:
        logger.info("species under %d crops: dropped %s, merged into %r %s", min_examples, dropped, other_label, merged)
    return kept, {"dropped": dropped, "merged": merged}


def split_crops(crops: Sequence[Crop], *, val_fraction: float, test_fraction: float, seed: int) -> SplitResult:
    """Deal whole groups to train / val / test (deterministic for a given seed).

    Raises:
        ValueError: fewer than three groups, so there cannot be three non-empty splits.
    """
    locations = {c.location for c in crops if c.location}
    by_location = len(locations) >= MIN_LOCATIONS
    if locations and not by_location:
        logger.warning("only %d location(s) %s: splitting by photo instead", len(locations), sorted(locations))
    groups: dict[str, list[Crop]] = defaultdict(list)
    for crop in crops:
        groups[group_key(crop, by_location)].append(crop)
    if len(groups) < 3:
        raise ValueError(f"need at least 3 photos or locations to make train/val/test splits, got {len(groups)}")
    fractions = {Split.TRAIN: 1.0 - val_fraction - test_fraction, Split.VAL: val_fraction, Split.TEST: test_fraction}
    assignment = _deal(groups, fractions, seed)
    splits = {s: sorted((c for g in assignment[s] for c in groups[g]), key=lambda c: c.path.name) for s in Split}
    labels = sorted({c.label for c in splits[Split.TRAIN]})
    unseen = Counter(c.label for s in (Split.VAL, Split.TEST) for c in splits[s] if c.label not in labels)
    for s in (Split.VAL, Split.TEST):
        splits[s] = [c for c in splits[s] if c.label in labels]
    grouping = "location" if by_location else "image"
    report = {
        "grouping": grouping,
        "groups": {s.value: len(assignment[s]) for s in Split},
        "dropped_not_in_train": dict(sorted(unseen.items())),
    }
    result = SplitResult(splits, labels, grouping, report)
    logger.info("split by %s: %s", result.grouping, result.counts())
    return result


def _deal(groups: dict[str, list[Crop]], fractions: dict[Split, float], seed: int) -> dict[Split, list[str]]:
    """Greedy quota filling: each group (largest first) goes where it covers the most unmet quota."""
    totals = Counter(c.label for crops in groups.values() for c in crops)
    need = {s: {label: f * n for label, n in totals.items()} for s, f in fractions.items()}
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -len(groups[g]))
    assignment: dict[Split, list[str]] = {s: [] for s in Split}
    for key in order:
        counts = Counter(c.label for c in groups[key])
        gains = {s: sum(min(n, max(0.0, need[s][label])) for label, n in counts.items()) for s in Split}
        best = max(Split, key=lambda s: (gains[s], sum(need[s].values())))
        assignment[best].append(key)
        for label, n in counts.items():
            need[best][label] -= n
    for empty in (Split.TEST, Split.VAL):
        if not assignment[empty]:
            donor = max(Split, key=lambda s: len(assignment[s]))
            smallest = min(assignment[donor], key=lambda g: (len(groups[g]), g))
            assignment[donor].remove(smallest)
            assignment[empty].append(smallest)
    return assignment
