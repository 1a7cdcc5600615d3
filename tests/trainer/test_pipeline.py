"""A whole training run in this process against a fake Label Studio: the gate on real models."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from backend.contracts import registry
from backend.contracts.bundle import BundleStatus, bundle_dir, list_bundles, read_manifest
from backend.vision.classifier import SpeciesClassifier
from tests.backend.bundles import write_bundle
from trainer.errors import EmptyDatasetError
from trainer.pipeline import run_training
from trainer.progress import Progress, Stage


class RecordingProgress(Progress):
    """Progress that remembers every stage it entered and every epoch it reported."""

    def __init__(self) -> None:
        super().__init__(None)
        self.stages: list[str] = []
        self.epochs: list[int] = []

    def stage(self, stage, detail="", **info):
        self.stages.append(stage.value)
        super().stage(stage, detail, **info)

    def update(self, **info):
        if "epoch" in info:
            self.epochs.append(info["epoch"])
        super().update(**info)


def test_run_training_promotes_the_first_model_and_refuses_a_worse_one(ls_settings, tiny_config, redis_client):
    progress = RecordingProgress()
    first = run_training(
        "2", settings=ls_settings, config=tiny_config, job_id="job-a", connection=redis_client, progress=progress
    )
    assert progress.stages == [s.value for s in Stage if s != Stage.QUEUED]
    assert progress.epochs == [1, 2, 3, 4]
    assert first.status == "promoted" and first.served_version is None
    assert first.reason.startswith("first model: ") and "majority class" in first.reason
    assert first.grouping == "location"
    assert first.macro_f1 > 0.6, "the synthetic colors should be learnt"
    models = ls_settings.models_dir
    assert registry.read_current(models, "2") == first.version
    served = SpeciesClassifier.load(bundle_dir(models, "2", first.version))
    assert served.labels == ["Blue Jay", "Green Frog", "Red Deer"]

    # Learning rate 0: the network stays at its random initialization, a worse model.
    worse = run_training(
        "2",
        settings=ls_settings,
        config=replace(tiny_config, learning_rate=0.0, gate_min_test_per_class=2),
        job_id="job-b",
        connection=redis_client,
    )
    assert worse.status == "rejected"
    assert worse.served_version == first.version and worse.served_macro_f1 == pytest.approx(first.macro_f1)
    assert worse.macro_f1 < first.macro_f1
    assert worse.reason.startswith("not better than the served model")
    assert registry.read_current(models, "2") == first.version
    manifest = read_manifest(bundle_dir(models, "2", worse.version))
    assert manifest.status == BundleStatus.REJECTED and manifest.parent_version == first.version
    metrics = json.loads((bundle_dir(models, "2", worse.version) / "metrics.json").read_text())
    assert metrics["served"]["version"] == first.version and metrics["gate"]["promote"] is False
    assert set(metrics["split"]["counts"]) == {"train", "val", "test"}
    assert [m.version for m in list_bundles(models, "2")] == [first.version, worse.version]


def test_run_training_refuses_a_project_with_too_few_examples_per_species(ls_settings, tiny_config):
    config = replace(tiny_config, min_examples_per_class=50)
    with pytest.raises(EmptyDatasetError, match="MIN_EXAMPLES_PER_CLASS"):
        run_training("2", settings=ls_settings, config=config, job_id="job-c", connection=None)
    assert list_bundles(ls_settings.models_dir, "2") == []


def test_a_served_bundle_without_a_recorded_split_is_not_compared_and_the_new_model_is_rejected(
    ls_settings, tiny_config
):
    """An upgrade: the served bundle predates split.json, so which photos it trained on is unknown."""
    models = ls_settings.models_dir
    write_bundle(models, "2", "p2-old", favourite="Red Deer", labels=["Blue Jay", "Green Frog", "Red Deer"])
    registry.write_current(models, "2", "p2-old")
    outcome = run_training("2", settings=ls_settings, config=tiny_config, job_id="job-d", connection=None)
    assert outcome.status == "rejected"
    assert outcome.reason.startswith("not comparable with the served model p2-old: its bundle records no split.json")
    assert "promote it by hand" in outcome.reason
    assert outcome.served_macro_f1 is None and outcome.gate["comparable"] is False
    assert registry.read_current(models, "2") == "p2-old"
    assert read_manifest(bundle_dir(models, "2", outcome.version)).status == BundleStatus.REJECTED
