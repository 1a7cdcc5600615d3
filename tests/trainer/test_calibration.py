"""Calibration: fitted on validation logits, stored in the bundle, applied where SPECIES_THRESHOLD is compared."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from backend.contracts.bundle import BundleManifest, Preprocessing
from backend.labelstudio.label_config import parse_label_config
from backend.labelstudio.predictions import ls_prediction
from backend.vision.classifier import SpeciesClassifier, build_network
from backend.vision.detector import Detection
from backend.vision.pipeline import Box
from backend.vision.thresholds import Thresholds
from tests.conftest import REPO_ROOT
from trainer.calibration import expected_calibration_error, fit_calibration

LABELS = ["Grey Fox", "Chicken"]


def _overconfident_classifier(calibration=None) -> SpeciesClassifier:
    """A real 2-species network whose answer is "Grey Fox" at softmax 0.95, whatever the crop."""
    torch.manual_seed(0)
    network = build_network("mobilenet_v3_small", len(LABELS))
    head = [m for m in network.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([3.0, 0.0]))
    manifest = BundleManifest(
        version="v1",
        project="1",
        labels=LABELS,
        backbone="mobilenet_v3_small",
        preprocessing=Preprocessing(input_size=32),
        calibration=calibration,
    )
    return SpeciesClassifier(manifest, network, torch.device("cpu"))


def _crops(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]


def test_calibration_makes_species_threshold_filter_with_two_species() -> None:
    """Right half the time at a softmax of 0.95: after calibration the score says 0.5, and 0.6 filters it."""
    raw = _overconfident_classifier()
    val = _crops(20)
    targets = [0, 1] * 10
    calibration = fit_calibration(raw.logits(val), targets, [10, 10])
    calibrated = _overconfident_classifier(calibration)

    [before] = raw.classify(_crops(1))
    [after] = calibrated.classify(_crops(1))
    assert before.label == after.label == "Grey Fox"
    assert before.score > 0.95 and after.score < 0.6

    mapping = parse_label_config((REPO_ROOT / "label_config.xml").read_text())
    thresholds = Thresholds(detection=0.01, classify=0.1, show=0.2, species=0.6)
    for guess, emitted in ((before, True), (after, False)):
        boxes = [Box(Detection("1", 0.9, (0.1, 0.1, 0.3, 0.3)), guess)]
        prediction = ls_prediction(boxes, mapping, 100, 100, "v", thresholds)
        assert any(r["from_name"] == "species" for r in prediction["result"]) is emitted

    ece_before = expected_calibration_error(raw.probabilities(raw.logits(val)), targets)
    ece_after = expected_calibration_error(calibrated.probabilities(calibrated.logits(val)), targets)
    assert ece_before == pytest.approx(0.45, abs=0.01) and ece_after < 0.05


def test_the_prior_correction_is_kept_only_when_it_lowers_the_validation_loss() -> None:
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(0, 0.1, (200, 2)), dtype=torch.float32)
    common = fit_calibration(logits, [0] * 180 + [1] * 20, [900, 100])
    assert common.log_prior == pytest.approx([np.log(0.9), np.log(0.1)], abs=1e-4)
    balanced = fit_calibration(logits, [0, 1] * 100, [900, 100])
    assert balanced.log_prior == [0.0, 0.0]


def test_a_bundle_refuses_a_calibration_that_does_not_fit_its_labels() -> None:
    with pytest.raises(ValueError, match="log_prior has 3 values for 2 labels"):
        BundleManifest(
            version="v1",
            project="1",
            labels=LABELS,
            backbone="resnet18",
            calibration={"temperature": 1.0, "log_prior": [0, 0, 0]},
        )
