"""The bundle contract: complete-or-absent bundles, validated manifests, atomic commit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file

from backend.contracts import bundle
from backend.errors import BundleError
from backend.vision.classifier import SpeciesClassifier, build_network
from tests.backend.bundles import stage_bundle


def _staged(models_dir: Path, job_id: str = "job1") -> tuple[Path, bundle.BundleManifest]:
    return stage_bundle(models_dir, "3", job_id=job_id, labels=["Grey Fox", "Chicken"], input_size=32)


def test_commit_bundle_renames_staging_into_place(tmp_path: Path) -> None:
    staging, manifest = _staged(tmp_path)
    final = bundle.commit_bundle(staging, tmp_path, manifest)
    assert final == tmp_path / "3" / manifest.version
    assert not staging.exists()
    assert bundle.read_manifest(final) == manifest
    assert [m.version for m in bundle.list_bundles(tmp_path, "3")] == [manifest.version]


def test_commit_bundle_refuses_incomplete_staging(tmp_path: Path) -> None:
    staging, manifest = _staged(tmp_path)
    (staging / bundle.WEIGHTS_FILE).unlink()
    with pytest.raises(BundleError, match="classifier.safetensors is missing"):
        bundle.commit_bundle(staging, tmp_path, manifest)
    assert bundle.list_bundles(tmp_path, "3") == []


def test_list_bundles_skips_staging_and_broken_directories(tmp_path: Path) -> None:
    staging, manifest = _staged(tmp_path)
    bundle.commit_bundle(staging, tmp_path, manifest)
    _staged(tmp_path, job_id="job2")  # left behind by a crash
    (tmp_path / "3" / "garbage").mkdir()
    assert [m.version for m in bundle.list_bundles(tmp_path, "3")] == [manifest.version]


def test_read_manifest_rejects_unknown_format(tmp_path: Path) -> None:
    staging, _ = _staged(tmp_path)
    data = json.loads((staging / bundle.MANIFEST_FILE).read_text())
    data["format_version"] = 99
    (staging / bundle.MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="format 99"):
        bundle.read_manifest(staging)


@pytest.mark.parametrize("version", ["../x", "a/b", "", ".hidden"])
def test_bundle_dir_rejects_path_like_versions(tmp_path: Path, version: str) -> None:
    with pytest.raises(BundleError):
        bundle.bundle_dir(tmp_path, "3", version)


def test_classifier_loads_committed_bundle_and_classifies(tmp_path: Path) -> None:
    from PIL import Image

    staging, manifest = _staged(tmp_path)
    final = bundle.commit_bundle(staging, tmp_path, manifest)
    classifier = SpeciesClassifier.load(final)
    predictions = classifier.classify([Image.new("RGB", (50, 80), (200, 10, 10)), Image.new("RGB", (9, 9))])
    assert len(predictions) == 2
    assert all(p.label in manifest.labels and 0.0 <= p.score <= 1.0 for p in predictions)


def test_classifier_load_rejects_weights_of_another_shape(tmp_path: Path) -> None:
    staging, manifest = _staged(tmp_path)
    save_file(build_network("mobilenet_v3_small", 5).state_dict(), staging / bundle.WEIGHTS_FILE)
    with pytest.raises(BundleError, match="do not fit"):
        SpeciesClassifier.load(staging)


def test_build_network_names_valid_backbones_on_typo() -> None:
    with pytest.raises(BundleError, match="efficientnet_b0"):
        build_network("efficientnet_b99", 3)


def test_classifier_load_turns_corrupt_weights_into_bundle_error(tmp_path: Path) -> None:
    staging, _ = _staged(tmp_path)
    (staging / bundle.WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(BundleError, match="do not fit"):
        SpeciesClassifier.load(staging)
