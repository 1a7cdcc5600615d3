"""Thresholds are clamped into detection <= classify <= show, with a log line."""

from __future__ import annotations

import logging

import pytest

from backend.config import Settings
from backend.vision.thresholds import Thresholds


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param((0.01, 0.1, 0.2), (0.01, 0.1, 0.2), id="in-order"),
        pytest.param((0.01, 0.5, 0.2), (0.01, 0.2, 0.2), id="classify-above-show"),
        pytest.param((0.3, 0.1, 0.5), (0.3, 0.3, 0.5), id="classify-below-detection"),
        pytest.param((0.4, 0.1, 0.2), (0.4, 0.4, 0.4), id="show-below-detection"),
    ],
)
def test_thresholds_are_clamped_into_order(given, expected, caplog) -> None:
    detection, classify, show = given
    settings = Settings(detection_threshold=detection, classify_threshold=classify, show_threshold=show)
    with caplog.at_level(logging.WARNING, "backend.vision.thresholds"):
        thresholds = Thresholds.from_settings(settings)
    assert (thresholds.detection, thresholds.classify, thresholds.show) == expected
    assert ("thresholds out of order" in caplog.text) is (given != expected)


def test_project_overrides_are_clamped_too(caplog) -> None:
    defaults = Thresholds(detection=0.01, classify=0.1, show=0.2, species=0.3)
    with caplog.at_level(logging.WARNING, "backend.vision.thresholds"):
        ordered = defaults.with_overrides({"classify_threshold": 0.6}, context="project 7: ")
    assert (ordered.classify, ordered.show) == (0.2, 0.2)
    assert "project 7: thresholds out of order" in caplog.text
