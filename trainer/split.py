"""Train / validation / test split by unit of photos, stable as the data grows and recorded in the bundle.

The units are places or sequences (``trainer.grouping``). A unit's split is a pure function of its key:
``sha256(project id, key)`` read as a number in [0, 1) falls in the test share (``TRAIN_TEST_FRACTION``),
the validation share (``TRAIN_VAL_FRACTION``) above it, or training, so a unit never changes split when
photos are added elsewhere and the next run's test split holds no unit this run trained on.

Three rules keep a run usable, each recorded in the report (and the card):

1. a species with fewer than 3 units is split inside the species, by sequence, then by photo
   (``split_inside``), so a species seen at one or two cameras is still learnt and tested;
2. a species whose units all fell in val/test gets its unit nearest to the training share moved to
   training (``moved``): every species keeps at least one training unit;
3. an empty test split takes the unit nearest to its share that training (not some species' only
   training unit) or validation (when it has two or more) can spare (``moved``); an empty validation
   split takes whole sequences out of the training units, by the hash of their key
   (``validation_inside_training_units``: early stopping and calibration then see known places), and
   only when none can be taken, a unit as for test (from training or test). When nothing can be taken
   the run stops with a clear error.

The moved units are the only ones whose split can change between runs; the gate never scores a model on
a photo or unit its served predecessor trained or validated on anyway (``trainer.gate``, through
``split.json``).

Species with fewer than ``MIN_EXAMPLES_PER_CLASS`` crops are merged into ``OTHER_LABEL`` (``other`` by
default; dropped when it is unset), before splitting.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from backend.contracts.bundle import BLANK_LABEL
from trainer.crops import Crop
from trainer.errors import EmptyDatasetError
from trainer.grouping import (
    FOLDER,
    LOCATION,
    MIN_LOCATIONS,
    PHOTO,
    SEQUENCE,
    photo_key,
    place_key,
    sequence_keys,
    unit_kind,
)

logger = logging.getLogger(__name__)

#: A species with fewer units than this is split inside the species (by sequence, then photo).
MIN_UNITS_PER_SPECIES = 3
#: ``split.json``'s format.
SPLIT_FORMAT = 1


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


@dataclass
class SplitResult:
    """The three splits, the label list (class index order), each crop's unit and what was done."""

    splits: dict[Split, list[Crop]]
    labels: list[str]
    grouping: str
    """``location``, ``folder``, ``sequence`` or ``photo``: the unit most crops were split by."""
    units: dict[str, Split] = field(default_factory=dict)
    """Unit key -> split."""
    unit_of: dict[Crop, str] = field(default_factory=dict)
    """Crop -> its unit key."""
    split_of: dict[Crop, Split] = field(default_factory=dict)
    """Crop -> its split (its unit's, but for validation photos carved out of training units)."""
    report: dict = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """Crops per species in each split (training counts include the extra views)."""
        return {s.value: dict(sorted(Counter(c.label for c in crops).items())) for s, crops in self.splits.items()}

    def record(self, project: str, sequence_gap_s: float) -> dict:
        """The content of ``split.json``: which unit and photo went where, and how units were made."""
        photos: dict[str, set[str]] = defaultdict(set)
        for crop, split in self.split_of.items():
            photos[crop.photo].add(split.value)
        return {
            "format_version": SPLIT_FORMAT,
            "project": project,
            "grouping": self.grouping,
            "sequence_gap_s": sequence_gap_s,
            "units": dict(sorted((k, s.value) for k, s in self.units.items())),
            "photos": {photo: sorted(splits) for photo, splits in sorted(photos.items())},
            "split_inside": self.report.get("split_inside", {}),
            "moved": self.report.get("moved", {}),
            "validation_inside_training_units": self.report.get("validation_inside_training_units", 0),
        }


def unit_value(project: str, key: str) -> float:
    """Where a unit falls in [0, 1): the first 8 bytes of ``sha256(project NUL key)``."""
    digest = hashlib.sha256(f"{project}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hashed_split(value: float, val_fraction: float, test_fraction: float) -> Split:
    """Test below ``test_fraction``, validation in the next ``val_fraction``, training above."""
    if value < test_fraction:
        return Split.TEST
    if value < test_fraction + val_fraction:
        return Split.VAL
    return Split.TRAIN


def apply_min_examples(
    crops: Sequence[Crop], min_examples: int, other_label: str | None
) -> tuple[list[Crop], dict[str, dict[str, int]]]:
    """Merge into ``other_label`` (or drop, when it is unset) the species with fewer than ``min_examples`` crops.

    Extra training views (jitter, matched boxes) do not count towards the minimum; ``blank`` is never merged.

    Returns:
        The kept crops and ``{"dropped": {species: n}, "merged": {species: n}}``.
    """
    totals = Counter(c.label for c in crops if not c.train_only)
    rare = {label for label, n in totals.items() if n < min_examples and label not in (other_label, BLANK_LABEL)}
    merged: dict[str, int] = {}
    if other_label and rare:
        merged = {label: totals[label] for label in sorted(rare)}
        crops = [replace(c, label=other_label) if c.label in rare else c for c in crops]
        totals = Counter(c.label for c in crops if not c.train_only)
        rare = {label for label, n in totals.items() if n < min_examples}
    dropped = {label: totals[label] for label in sorted(rare)}
    kept = [c for c in crops if c.label not in rare]
    if dropped or merged:
        logger.info("species under %d crops: dropped %s, merged into %r %s", min_examples, dropped, other_label, merged)
    return kept, {"dropped": dropped, "merged": merged}


def split_crops(
    crops: Sequence[Crop], *, project: str, val_fraction: float, test_fraction: float, sequence_gap_s: float
) -> SplitResult:
    """Deal units of photos to train / val / test by the hash of their key (see the module docstring).

    Raises:
        EmptyDatasetError: the validation or test split would be empty (too few units).
    """
    unit_of, grouping, inside = _units(crops, sequence_gap_s)
    keys = sorted(set(unit_of.values()))
    value = {key: unit_value(project, key) for key in keys}
    units = {key: hashed_split(value[key], val_fraction, test_fraction) for key in keys}
    moved: dict[str, str] = {}
    _every_species_trains(crops, unit_of, units, value, moved)
    _fill_empty(Split.TEST, crops, unit_of, units, value, (0.0, test_fraction), moved)
    split_of = {crop: units[unit_of[crop]] for crop in crops}
    carved = _carve_validation(crops, split_of, project, val_fraction, sequence_gap_s)
    if not carved:
        bounds = (test_fraction, test_fraction + val_fraction)
        _fill_empty(Split.VAL, crops, unit_of, units, value, bounds, moved)
        split_of = {crop: units[unit_of[crop]] for crop in crops}
    splits: dict[Split, list[Crop]] = {s: [] for s in Split}
    for crop in crops:
        target = split_of[crop]
        if target is Split.TRAIN or not crop.train_only:
            splits[target].append(crop)
    for s in Split:
        splits[s].sort(key=lambda c: c.path.name)
    labels = sorted({c.label for c in splits[Split.TRAIN]})
    report = {
        "grouping": grouping,
        "units": {s.value: sum(1 for u in units.values() if u is s) for s in Split},
        "unit_kinds": dict(sorted(Counter(unit_kind(k) for k in keys).items())),
        "split_inside": inside,
        "moved": moved,
        "validation_inside_training_units": carved,
    }
    result = SplitResult(splits, labels, grouping, units, dict(unit_of), split_of, report)
    logger.info("split by %s: %s", grouping, result.counts())
    return result


def _units(crops: Sequence[Crop], gap_s: float) -> tuple[dict[Crop, str], str, dict[str, str]]:
    """Each crop's unit key, the run's grouping, and the species split inside themselves (and how)."""
    sequences = sequence_keys(crops, gap_s)
    places = {key for c in crops if (key := place_key(c)) is not None}
    by_place = len(places) >= MIN_LOCATIONS
    if places and not by_place:
        logger.warning("only %d location(s) %s: splitting by sequence instead", len(places), sorted(places))

    def run_level(crop: Crop) -> str:
        place = place_key(crop)
        return place if by_place and place else sequences[crop.photo]

    unit_of = {crop: run_level(crop) for crop in crops}
    inside: dict[str, str] = {}
    for species in sorted({c.label for c in crops}):
        mine = [c for c in crops if c.label == species]
        if len({unit_of[c] for c in mine}) >= MIN_UNITS_PER_SPECIES:
            continue
        for key_of in (lambda c: sequences[c.photo], photo_key):
            finer = {c: key_of(c) for c in mine}
            if len(set(finer.values())) > len({unit_of[c] for c in mine}):
                unit_of.update(finer)
                kinds = {unit_kind(k) for k in finer.values()}
                inside[species] = SEQUENCE if SEQUENCE in kinds else PHOTO
            if len(set(finer.values())) >= MIN_UNITS_PER_SPECIES:
                break
    if inside:
        logger.info("species with fewer than %d units split inside themselves: %s", MIN_UNITS_PER_SPECIES, inside)
    return unit_of, _grouping(crops, by_place, sequences), inside


def _grouping(crops: Sequence[Crop], by_place: bool, sequences: dict[str, str]) -> str:
    if by_place:
        kinds = Counter(LOCATION if c.location else FOLDER for c in crops if place_key(c))
        return kinds.most_common(1)[0][0]
    timed = sum(1 for c in crops if unit_kind(sequences[c.photo]) == SEQUENCE)
    return SEQUENCE if timed * 2 >= len(crops) else PHOTO


def _every_species_trains(
    crops: Sequence[Crop], unit_of: dict[Crop, str], units: dict[str, Split], value: dict[str, float], moved: dict
) -> None:
    for species in sorted({c.label for c in crops}):
        mine = sorted({unit_of[c] for c in crops if c.label == species})
        if any(units[k] is Split.TRAIN for k in mine):
            continue
        key = max(mine, key=lambda k: (value[k], k))
        logger.info("species %r has no training unit: %s moved from %s to train", species, key, units[key].value)
        moved[key] = f"{units[key].value}->train"
        units[key] = Split.TRAIN


def _carve_validation(
    crops: Sequence[Crop], split_of: dict[Crop, Split], project: str, val_fraction: float, gap_s: float
) -> int:
    """With no validation unit, take validation photos out of the training units, by their sequence's hash.

    Stable as data grows (a sequence's hash never changes) and it moves no unit; a sequence is taken
    whole, and only when every species in it has at least 3 training sequences.

    Returns:
        How many crops became validation crops (0: none could).
    """
    if any(split is Split.VAL for crop, split in split_of.items() if not crop.train_only):
        return 0
    sequences = sequence_keys(crops, gap_s)
    training = [c for c in crops if split_of[c] is Split.TRAIN]
    per_species: dict[str, set[str]] = defaultdict(set)
    for crop in training:
        per_species[crop.label].add(sequences[crop.photo])
    chosen = {
        key
        for keys in per_species.values()
        if len(keys) >= MIN_UNITS_PER_SPECIES
        for key in keys
        if unit_value(project, f"validation|{key}") < val_fraction
    }
    ineligible = {key for label, keys in per_species.items() if len(keys) < MIN_UNITS_PER_SPECIES for key in keys}
    chosen -= ineligible  # a sequence moves whole, and never with a species' scarce training photos
    carved = 0
    for crop in training:
        if sequences[crop.photo] in chosen:
            split_of[crop] = Split.VAL
            carved += 0 if crop.train_only else 1
    if carved:
        logger.info("no validation unit: %d crops of training units' sequences held out for validation", carved)
    return carved


def _fill_empty(
    wanted: Split,
    crops: Sequence[Crop],
    unit_of: dict[Crop, str],
    units: dict[str, Split],
    value: dict[str, float],
    bounds: tuple[float, float],
    moved: dict,
) -> None:
    """Give an empty split the unit nearest to its hash interval ``bounds`` that another split can spare.

    Training spares a unit that is no species' only training unit; validation or test spare one of two or more.
    """
    evaluated = [c for c in crops if not c.train_only]
    if any(units[unit_of[c]] is wanted for c in evaluated):
        return
    train_units: dict[str, set[str]] = defaultdict(set)
    for crop in crops:
        if units[unit_of[crop]] is Split.TRAIN:
            train_units[crop.label].add(unit_of[crop])
    sole = {next(iter(keys)) for keys in train_units.values() if len(keys) == 1}
    held: dict[Split, set[str]] = defaultdict(set)
    for crop in evaluated:
        held[units[unit_of[crop]]].add(unit_of[crop])
    spare = held[Split.TRAIN] - sole
    for donor in (Split.VAL, Split.TEST):
        if donor is not wanted and len(held[donor]) >= 2:
            spare |= held[donor]
    low, high = bounds

    def distance(key: str) -> tuple[float, str]:
        return (max(low - value[key], value[key] - high, 0.0), key)

    if not spare:
        total = len({unit_of[c] for c in evaluated})
        raise EmptyDatasetError(
            f"the {wanted.value} split would be empty: {total} unit(s) of photos cannot give every species a "
            "training unit and still hold some out for validation and test; label more photos, locations or sequences"
        )
    key = min(spare, key=distance)
    logger.info("the %s split was empty: %s moved from %s", wanted.value, key, units[key].value)
    moved[key] = f"{units[key].value}->{wanted.value}"
    units[key] = wanted
