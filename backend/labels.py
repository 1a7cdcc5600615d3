"""What a project's labeling config asks for, read with label-studio-sdk's ``LabelInterface``.

:func:`parse_label_config` finds the ``Image`` tag, the ``RectangleLabels`` that boxes go to, the
per-region species ``Choices`` and the image-level ``Choices``, and maps MegaDetector's categories
and our outcomes onto the config's own label values:

- a box label matches a MegaDetector category (``animal``, ``person``, ``vehicle``) by its value
  (case-insensitive) or by a ``predicted_values="animal,..."`` attribute; unmatched categories are dropped;
- a species name matches a per-region ``Choice`` exactly, then case-insensitively (or through
  ``predicted_values``); unmatched species are not emitted;
- an image-level ``Choice`` matches an outcome (:class:`ImageOutcome`) by ``predicted_values`` or by
  keyword (``empty``/``blank``, ``animal``, ``person``/``human``, ``vehicle``, ``review``/``unsure``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

from label_studio_sdk.label_interface import LabelInterface

from backend.errors import LabelConfigError

logger = logging.getLogger(__name__)

#: MegaDetector's category ids and names (``megadetector.detection.run_detector.DEFAULT_DETECTOR_LABEL_MAP``).
MD_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
ANIMAL_CATEGORY = "1"


class ImageOutcome(StrEnum):
    """The image-level verdict, mapped to one of the project's image-level choices."""

    EMPTY = "empty"
    ANIMAL = "animal"
    PERSON = "person"
    VEHICLE = "vehicle"
    REVIEW = "review"


_OUTCOME_KEYWORDS = {
    ImageOutcome.EMPTY: ("empty", "blank", "nothing", "no animal"),
    ImageOutcome.ANIMAL: ("animal",),
    ImageOutcome.PERSON: ("person", "human", "people"),
    ImageOutcome.VEHICLE: ("vehicle",),
    ImageOutcome.REVIEW: ("review", "unsure", "uncertain", "check"),
}


@dataclass(frozen=True)
class LabelMapping:
    """Names and values of the controls the backend fills, for one labeling config."""

    image_name: str
    """``to_name`` of every result: the Image tag's name."""
    image_key: str
    """The task data key holding the image reference (``$image`` -> ``image``)."""
    box_from_name: str
    categories: dict[str, str]
    """MegaDetector category id -> RectangleLabels label value."""
    species_from_name: str | None = None
    species_values: dict[str, str] = field(default_factory=dict)
    """Lower-cased species name (or predicted value) -> per-region Choice value."""
    image_choice_from_name: str | None = None
    outcome_values: dict[ImageOutcome, str] = field(default_factory=dict)

    def species_value(self, name: str) -> str | None:
        """The Choice value for a classifier label, or None if the config has no such choice."""
        return self.species_values.get(name) or self.species_values.get(name.casefold())

    def outcome_value(self, outcome: ImageOutcome) -> str | None:
        """The image-level Choice value for ``outcome``, falling back to the review choice."""
        return self.outcome_values.get(outcome) or (
            self.outcome_values.get(ImageOutcome.REVIEW) if outcome is not ImageOutcome.EMPTY else None
        )


def parse_label_config(config: str) -> LabelMapping:
    """Read a labeling config (cached per config text).

    Raises:
        LabelConfigError: the config is not valid, or lacks an Image tag or a RectangleLabels
            control whose labels match a MegaDetector category; the message says what to add.
    """
    if not isinstance(config, str) or not config.strip():
        raise LabelConfigError("the labeling config is empty: send the project's label config (schema)")
    return _parse(config)


@lru_cache(maxsize=64)
def _parse(config: str) -> LabelMapping:
    try:
        interface = LabelInterface(config)
    except Exception as exc:  # the SDK raises bare Exceptions and lxml errors alike
        raise LabelConfigError(f"the labeling config cannot be parsed: {exc}") from exc
    images = [o for o in interface.objects if o.tag == "Image" and (o.value or "").startswith("$")]
    if not images:
        raise LabelConfigError('the labeling config has no <Image> tag: add <Image name="image" value="$image"/>')
    image_names = {o.name for o in images}
    boxes = [c for c in interface.controls if c.tag == "RectangleLabels" and set(c.to_name) & image_names]
    if not boxes:
        raise LabelConfigError(
            "the labeling config has no <RectangleLabels> connected to an <Image>: add "
            '<RectangleLabels name="box" toName="image"> with labels animal, person and vehicle'
        )
    box = max(boxes, key=lambda c: len(_category_map(c)))
    categories = _category_map(box)
    if not categories:
        raise LabelConfigError(
            f'none of the labels of <RectangleLabels name="{box.name}"> ({", ".join(box.labels)}) matches a '
            'MegaDetector category (animal, person, vehicle): rename one or add predicted_values="animal"'
        )
    image = next(o for o in images if o.name in box.to_name)
    choices = [c for c in interface.controls if c.tag == "Choices" and image.name in c.to_name]
    per_region = [c for c in choices if c.attr.get("perRegion") == "true"]
    species = next((c for c in per_region if "species" in c.name.lower()), per_region[0] if per_region else None)
    image_level = [(c, _outcome_map(c)) for c in choices if c.attr.get("perRegion") != "true"]
    image_level = [(c, m) for c, m in image_level if m]
    image_choice, outcomes = image_level[0] if image_level else (None, {})
    return LabelMapping(
        image_name=image.name,
        image_key=image.value_name,
        box_from_name=box.name,
        categories=categories,
        species_from_name=species.name if species else None,
        species_values=_species_map(species) if species else {},
        image_choice_from_name=image_choice.name if image_choice else None,
        outcome_values=outcomes,
    )


def _predicted_values(control: object, label: str) -> list[str]:
    tag = (control.labels_attrs or {}).get(label)
    raw = tag.attr.get("predicted_values", "") if tag is not None else ""
    return [v.strip().casefold() for v in raw.split(",") if v.strip()]


def _category_map(control: object) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for label in control.labels:
        wanted = _predicted_values(control, label) or [label.casefold()]
        for category, name in MD_CATEGORIES.items():
            if (name in wanted or category in wanted) and category not in mapping:
                mapping[category] = label
    return mapping


def _species_map(control: object) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for label in control.labels:
        mapping[label] = label
        for key in [label.casefold(), *_predicted_values(control, label)]:
            mapping.setdefault(key, label)
    return mapping


def _outcome_map(control: object) -> dict[ImageOutcome, str]:
    mapping: dict[ImageOutcome, str] = {}
    for label in control.labels:
        explicit = _predicted_values(control, label)
        text = label.casefold()
        for outcome, keywords in _OUTCOME_KEYWORDS.items():
            hit = outcome.value in explicit if explicit else any(k in text for k in keywords)
            if hit and outcome not in mapping:
                mapping[outcome] = label
                break
    return mapping
