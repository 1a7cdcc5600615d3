"""The one reader of a project's labeling config, for serving and for training alike.

:func:`read_label_config` reads the config with label-studio-sdk's ``LabelInterface`` and decides,
once for every caller, which control holds what:

- **image**: the ``Image`` tag whose ``value`` is a task data key (``$image`` -> ``image``);
- **boxes**: the ``RectangleLabels`` on that image whose labels match the most MegaDetector categories,
  by value (case-insensitive) or by ``predicted_values="animal,..."``;
- **per-region species**: among ``Choices perRegion="true"`` on the image, the one whose name contains
  ``species``, else the first (so a ``sex`` or ``age`` control next to ``species`` is never the species);
- **image-level species**: an image-level ``Choices`` whose name contains ``species``; or, when there
  is no per-region species, an image-level ``Choices`` none of whose values is an outcome (the "Image
  classification" template's ``choice`` over crops);
- **outcome**: the first other image-level ``Choices`` whose values match an :class:`ImageOutcome`
  by ``predicted_values`` or by keyword (``empty``/``blank``, ``animal``, ``person``, ``vehicle``,
  ``review``/``unsure``).

Species names map onto a control's values exactly, then case-insensitively, then through
``predicted_values`` (training maps annotation values the same way, so a class is always spelled as the
config spells it). :func:`parse_label_config` adds what serving needs (an image and boxes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from label_studio_sdk.label_interface import LabelInterface

from backend.errors import LabelConfigError
from backend.vision.categories import MD_CATEGORIES

logger = logging.getLogger(__name__)

#: Data key of the image when the config names none.
DEFAULT_IMAGE_KEY = "image"


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
    """Which control of a labeling config holds what, and how our names map onto its values."""

    image_name: str | None = None
    """``to_name`` of every result: the Image tag's name (None: the config has no usable Image)."""
    image_key: str = DEFAULT_IMAGE_KEY
    """The task data key holding the image reference (``$image`` -> ``image``)."""
    box_from_name: str | None = None
    categories: dict[str, str] = field(default_factory=dict)
    """MegaDetector category id -> RectangleLabels label value."""
    species_from_name: str | None = None
    """The per-region species Choices."""
    species_values: dict[str, str] = field(default_factory=dict)
    """Species name, lower-cased name or predicted value -> per-region Choice value."""
    image_species_from_name: str | None = None
    """The image-level species Choices."""
    image_species_values: dict[str, str] = field(default_factory=dict)
    image_choice_from_name: str | None = None
    """The image-level outcome Choices (empty / animal / person / ...)."""
    outcome_values: dict[ImageOutcome, str] = field(default_factory=dict)

    def species_value(self, name: str) -> str | None:
        """The per-region Choice value for a species name, or None if the config has no such choice."""
        return _lookup(self.species_values, name)

    def image_species_value(self, name: str) -> str | None:
        """The image-level species Choice value for a species name, or None."""
        return _lookup(self.image_species_values, name)

    def outcome_value(self, outcome: ImageOutcome) -> str | None:
        """The image-level Choice value for ``outcome``, falling back to the review choice."""
        return self.outcome_values.get(outcome) or (
            self.outcome_values.get(ImageOutcome.REVIEW) if outcome is not ImageOutcome.EMPTY else None
        )

    @property
    def species_controls(self) -> frozenset[str]:
        """Names of the controls whose values are species (per-region and image-level)."""
        return frozenset(n for n in (self.species_from_name, self.image_species_from_name) if n)

    def canonical_species(self, name: str) -> str | None:
        """A species name spelled as the config spells it (per-region first), or None if unknown."""
        return self.species_value(name) or self.image_species_value(name)

    def served_species_value(self, name: str) -> str | None:
        """The choice a species guess is served as: the per-region control's when there is one, else the
        image-level species control's; None when the config cannot show it."""
        if self.species_from_name:
            return self.species_value(name)
        if self.image_species_from_name:
            return self.image_species_value(name)
        return None

    def unmapped_labels(self, labels: list[str], blank: str) -> list[str]:
        """The classifier labels this config cannot show (``blank`` is never shown, so never missing)."""
        return [label for label in labels if label != blank and self.served_species_value(label) is None]


def parse_label_config(config: str) -> LabelMapping:
    """Read a labeling config for serving (cached per config text).

    Raises:
        LabelConfigError: the config is not valid, or lacks an Image tag or a RectangleLabels
            control whose labels match a MegaDetector category; the message says what to add.
    """
    mapping = read_label_config(config)
    if mapping.image_name is None:
        raise LabelConfigError('the labeling config has no <Image> tag: add <Image name="image" value="$image"/>')
    if mapping.box_from_name is None:
        raise LabelConfigError(
            "the labeling config has no <RectangleLabels> connected to an <Image>: add "
            '<RectangleLabels name="box" toName="image"> with labels animal, person and vehicle'
        )
    if not mapping.categories:
        raise LabelConfigError(
            f'none of the labels of <RectangleLabels name="{mapping.box_from_name}"> matches a MegaDetector '
            'category (animal, person, vehicle): rename one or add predicted_values="animal"'
        )
    return mapping


def read_label_config(config: str) -> LabelMapping:
    """Read what a labeling config holds, without requiring anything of it (cached per config text).

    Raises:
        LabelConfigError: the config is empty or cannot be parsed.
    """
    if not isinstance(config, str) or not config.strip():
        raise LabelConfigError("the labeling config is empty: send the project's label config (schema)")
    return _read(config)


@lru_cache(maxsize=64)
def _read(config: str) -> LabelMapping:
    try:
        interface = LabelInterface(config)
    except Exception as exc:  # the SDK raises bare Exceptions and lxml errors alike
        raise LabelConfigError(f"the labeling config cannot be parsed: {exc}") from exc
    images = [o for o in interface.objects if o.tag == "Image" and (o.value or "").startswith("$")]
    if not images:
        return LabelMapping()
    image_names = {o.name for o in images}
    boxes = [c for c in interface.controls if c.tag == "RectangleLabels" and set(c.to_name) & image_names]
    box = max(boxes, key=lambda c: len(_category_map(c))) if boxes else None
    image = next((o for o in images if box is not None and o.name in box.to_name), images[0])
    choices = [c for c in interface.controls if c.tag == "Choices" and image.name in c.to_name]
    per_region = [c for c in choices if _per_region(c)]
    species = next((c for c in per_region if _named_species(c)), per_region[0] if per_region else None)
    image_level = [c for c in choices if not _per_region(c)]
    image_species = next((c for c in image_level if _named_species(c)), None)
    outcome = next((c for c in image_level if c is not image_species and _outcome_map(c)), None)
    if image_species is None and species is None:
        image_species = next((c for c in image_level if c is not outcome and not _outcome_map(c)), None)
    return LabelMapping(
        image_name=image.name,
        image_key=image.value_name,
        box_from_name=box.name if box is not None else None,
        categories=_category_map(box) if box is not None else {},
        species_from_name=species.name if species is not None else None,
        species_values=_species_map(species) if species is not None else {},
        image_species_from_name=image_species.name if image_species is not None else None,
        image_species_values=_species_map(image_species) if image_species is not None else {},
        image_choice_from_name=outcome.name if outcome is not None else None,
        outcome_values=_outcome_map(outcome) if outcome is not None else {},
    )


def _per_region(control: Any) -> bool:
    return str(control.attr.get("perRegion", "")).lower() == "true"


def _named_species(control: Any) -> bool:
    return "species" in control.name.lower()


def _lookup(values: dict[str, str], name: str) -> str | None:
    return values.get(name) or values.get(name.casefold())


def _predicted_values(control: Any, label: str) -> list[str]:
    tag = (control.labels_attrs or {}).get(label)
    raw = tag.attr.get("predicted_values", "") if tag is not None else ""
    return [v.strip().casefold() for v in raw.split(",") if v.strip()]


def _category_map(control: Any) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for label in control.labels:
        wanted = _predicted_values(control, label) or [label.casefold()]
        for category, name in MD_CATEGORIES.items():
            if (name in wanted or category in wanted) and category not in mapping:
                mapping[category] = label
    return mapping


def _species_map(control: Any) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for label in control.labels:
        mapping[label] = label
        for key in [label.casefold(), *_predicted_values(control, label)]:
            mapping.setdefault(key, label)
    return mapping


def _outcome_map(control: Any) -> dict[ImageOutcome, str]:
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
