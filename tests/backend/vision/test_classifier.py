"""A loaded bundle crops by its own rule, refuses rules it does not know, and reads older bundles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from backend.contracts.bundle import MANIFEST_FILE
from backend.errors import BundleError
from backend.vision.classifier import SpeciesClassifier
from tests.backend.bundles import write_bundle

EDGE_BOX = [0.95, 0.3, 0.05, 0.4]


def _rewrite(bundle, **changes) -> None:
    path = bundle / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["preprocessing"].update(changes)
    manifest.pop("calibration", None)
    path.write_text(json.dumps(manifest))


def test_a_bundle_crops_with_the_rule_it_names(tmp_path) -> None:
    image = Image.new("RGB", (1000, 600), (255, 255, 255))
    new = SpeciesClassifier.load(write_bundle(tmp_path, "1", "v-new", favourite="Chicken"))
    assert new.manifest.preprocessing.crop == "square_shifted"
    assert (np.asarray(new.crop(image, EDGE_BOX)) == 255).all()
    old_bundle = write_bundle(tmp_path, "1", "v-old", favourite="Chicken")
    _rewrite(old_bundle, crop="square")  # as every bundle written before square_shifted
    old = SpeciesClassifier.load(old_bundle)
    assert old.manifest.calibration is None
    assert (np.asarray(old.crop(image, EDGE_BOX))[:, -1] == 0).all(), "trained with the old padding, served so"
    [guess] = old.classify([old.crop(image, EDGE_BOX)])
    assert guess.label == "Chicken" and guess.score > 0.99


def test_a_bundle_with_an_unknown_crop_rule_is_refused(tmp_path) -> None:
    bundle = write_bundle(tmp_path, "1", "v1", favourite="Chicken")
    _rewrite(bundle, crop="circle")
    with pytest.raises(BundleError, match="unknown crop rule 'circle'"):
        SpeciesClassifier.load(bundle)
