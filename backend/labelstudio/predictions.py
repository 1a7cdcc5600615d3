"""Boxes and species guesses -> Label Studio predictions (RectangleLabels + per-region Choices + image-level Choices).

The format is documented in ``docs/serving.md``; every prediction the tests produce is validated with
label-studio-sdk against the labeling config it was made for. A ``blank`` guess (the classifier's "no
animal here" class) is served as no species; a guess the config cannot spell is left out and counted
(:func:`unmapped_species`, the ``camtrap_unmapped_labels_total`` metric).
"""

from __future__ import annotations

from backend.contracts.bundle import BLANK_LABEL
from backend.labelstudio.label_config import ImageOutcome, LabelMapping
from backend.vision.categories import ANIMAL_CATEGORY, PERSON_CATEGORY, VEHICLE_CATEGORY
from backend.vision.pipeline import Box
from backend.vision.thresholds import Thresholds

#: Decimal places of Label Studio percent coordinates.
PERCENT_DIGITS = 4
#: Decimal places of scores.
SCORE_DIGITS = 4
#: Region id of the image-level choice.
IMAGE_CHOICE_ID = "image-level"
#: Region id of the image-level species choice.
IMAGE_SPECIES_ID = "image-species"


def shown_species(box: Box, thresholds: Thresholds) -> str | None:
    """The species a shown animal box is served with: its guess at or above the species threshold, never blank."""
    species = box.species
    if species is None or species.label == BLANK_LABEL or species.score < thresholds.species:
        return None
    return species.label


def unmapped_species(boxes: list[Box], mapping: LabelMapping, thresholds: Thresholds) -> list[str]:
    """Species guesses that would be shown but that none of the config's choices spells (left out)."""
    return [
        label
        for box in boxes
        if box.detection.conf >= thresholds.show
        and (label := shown_species(box, thresholds)) is not None
        and mapping.served_species_value(label) is None
    ]


def image_outcome(boxes: list[Box], thresholds: Thresholds) -> tuple[ImageOutcome, float]:
    """The image-level verdict and its score.

    An animal box at or above the show threshold -> ANIMAL; otherwise a shown person or vehicle box
    -> PERSON / VEHICLE; otherwise any detection at or above the classify threshold -> REVIEW
    (something faint is there); otherwise EMPTY, scored 1 - the best confidence.
    """
    best = max((b.detection.conf for b in boxes), default=0.0)
    for category, outcome in (
        (ANIMAL_CATEGORY, ImageOutcome.ANIMAL),
        (PERSON_CATEGORY, ImageOutcome.PERSON),
        (VEHICLE_CATEGORY, ImageOutcome.VEHICLE),
    ):
        shown = [
            b.detection.conf for b in boxes if b.detection.category == category and b.detection.conf >= thresholds.show
        ]
        if shown:
            return outcome, max(shown)
    if best >= thresholds.classify:
        return ImageOutcome.REVIEW, best
    return ImageOutcome.EMPTY, 1.0 - best


def empty_prediction(model_version: str) -> dict:
    """The prediction of a task whose image could not be processed: no result, no score."""
    return {"result": [], "score": None, "model_version": model_version}


def ls_prediction(
    boxes: list[Box], mapping: LabelMapping, width: int, height: int, model_version: str, thresholds: Thresholds
) -> dict:
    """One Label Studio prediction for one image.

    Boxes at or above the show threshold whose category the config maps become RectangleLabels
    regions (``id`` ``md-<n>``); a species guess at or above the species threshold whose name the
    config knows becomes a per-region Choices result with the same ``id`` and geometry; the
    image-level verdict becomes a Choices result when the config has such a control, and so does the
    species of the top shown animal box when the config has an image-level species control.
    """
    geometry = {"original_width": width, "original_height": height, "image_rotation": 0}
    result: list[dict] = []
    scores: list[float] = []
    for box in boxes:
        det = box.detection
        label = mapping.categories.get(det.category)
        if label is None or det.conf < thresholds.show:
            continue
        region_id = f"md-{len(scores)}"
        value = _percent_box(det.bbox)
        score = _unit(det.conf)
        scores.append(score)
        common = {"id": region_id, "to_name": mapping.image_name, **geometry}
        result.append(
            {
                **common,
                "from_name": mapping.box_from_name,
                "type": "rectanglelabels",
                "value": {**value, "rectanglelabels": [label]},
                "score": score,
            }
        )
        label = shown_species(box, thresholds)
        choice = mapping.species_value(label) if label and mapping.species_from_name else None
        if box.species is not None and choice is not None:
            result.append(
                {
                    **common,
                    "from_name": mapping.species_from_name,
                    "type": "choices",
                    "value": {**value, "choices": [choice]},
                    "score": _unit(box.species.score),
                }
            )
    image_species = _image_species(boxes, mapping, thresholds)
    if image_species is not None:
        result.append(image_species)
    outcome, outcome_score = image_outcome(boxes, thresholds)
    choice = mapping.outcome_value(outcome) if mapping.image_choice_from_name else None
    if choice is not None:
        result.append(
            {
                "id": IMAGE_CHOICE_ID,
                "from_name": mapping.image_choice_from_name,
                "to_name": mapping.image_name,
                "type": "choices",
                "value": {"choices": [choice]},
                "score": _unit(outcome_score),
            }
        )
    score = sum(scores) / len(scores) if scores else outcome_score
    return {"result": result, "score": _unit(score), "model_version": model_version}


def _image_species(boxes: list[Box], mapping: LabelMapping, thresholds: Thresholds) -> dict | None:
    """The image-level species result: the species of the most confident shown animal box, if the config
    has an image-level species control and can spell it."""
    if not mapping.image_species_from_name:
        return None
    shown = [b for b in boxes if b.is_animal and b.detection.conf >= thresholds.show]
    top = max(shown, key=lambda b: b.detection.conf, default=None)
    label = shown_species(top, thresholds) if top is not None else None
    choice = mapping.image_species_value(label) if label else None
    if top is None or top.species is None or choice is None:
        return None
    return {
        "id": IMAGE_SPECIES_ID,
        "from_name": mapping.image_species_from_name,
        "to_name": mapping.image_name,
        "type": "choices",
        "value": {"choices": [choice]},
        "score": _unit(top.species.score),
    }


def _percent_box(bbox: tuple[float, float, float, float]) -> dict:
    """Normalized ``[x, y, w, h]`` -> LS percent values, clamped so the box stays within [0, 100]."""
    x = _clamp(bbox[0] * 100)
    y = _clamp(bbox[1] * 100)
    return {
        "x": round(x, PERCENT_DIGITS),
        "y": round(y, PERCENT_DIGITS),
        "width": round(_clamp(bbox[2] * 100, 100 - x), PERCENT_DIGITS),
        "height": round(_clamp(bbox[3] * 100, 100 - y), PERCENT_DIGITS),
        "rotation": 0,
    }


def _clamp(value: float, upper: float = 100.0) -> float:
    return min(max(float(value), 0.0), upper)


def _unit(value: float) -> float:
    return round(_clamp(value, 1.0), SCORE_DIGITS)
