"""Confidence thresholds of one project: the settings' defaults, overridden by its ``extra_params``.

They only make sense in the order detection <= classify <= show (a shown box must have been classified,
a classified box must have been detected); :meth:`Thresholds.ordered` clamps them into that order and
logs what it changed, and every constructor here returns ordered thresholds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from backend.config import Settings

logger = logging.getLogger(__name__)

#: ``extra_params`` keys that override a threshold for one project, and the field each one sets.
THRESHOLD_PARAMS = {
    "detection_threshold": "detection",
    "classify_threshold": "classify",
    "show_threshold": "show",
    "species_threshold": "species",
}


@dataclass(frozen=True)
class Thresholds:
    """Confidence thresholds; their defaults live in the settings only (``DETECTION_THRESHOLD``...)."""

    detection: float
    """Detections kept at all (and written to MegaDetector JSON)."""
    classify: float
    """Animal boxes at or above this are cropped and classified."""
    show: float
    """Boxes at or above this are sent to Label Studio."""
    species: float
    """A species guess below this classifier score is not emitted."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            detection=settings.detection_threshold,
            classify=settings.classify_threshold,
            show=settings.show_threshold,
            species=settings.species_threshold,
        ).ordered()

    def ordered(self, context: str = "") -> Thresholds:
        """These thresholds clamped to detection <= classify <= show (a log line says what moved).

        ``show`` is raised to ``detection`` if below it; ``classify`` is then kept between the two.
        """
        show = max(self.show, self.detection)
        classify = min(max(self.classify, self.detection), show)
        if (classify, show) == (self.classify, self.show):
            return self
        logger.warning(
            "%sthresholds out of order (detection %s, classify %s, show %s): using classify %s, show %s "
            "(detection <= classify <= show)",
            context,
            self.detection,
            self.classify,
            self.show,
            classify,
            show,
        )
        return replace(self, classify=classify, show=show)

    def with_overrides(self, extra_params: dict[str, Any], *, context: str = "") -> Thresholds:
        """These thresholds with the valid ``*_threshold`` values of ``extra_params`` on top (others logged)."""
        values: dict[str, float] = {}
        for key, name in THRESHOLD_PARAMS.items():
            if key not in extra_params:
                continue
            try:
                value = float(extra_params[key])
            except (TypeError, ValueError):
                value = -1.0
            if 0.0 <= value <= 1.0:
                values[name] = value
            else:
                logger.warning("%signoring extra_params %s=%r (need 0..1)", context, key, extra_params[key])
        return replace(self, **values).ordered(context)
