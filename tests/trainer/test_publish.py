"""The gate and the atomic bundle write: no half bundle, no moved pointer, announcements on promotion."""

from __future__ import annotations

import json
import time

import pytest
import torch

import trainer.publish as publish_module
from backend.contracts import bundle as bundle_module
from backend.contracts import registry
from backend.contracts.bundle import BundleManifest, BundleStatus, list_bundles, read_manifest, read_split
from backend.contracts.keys import RedisKeys
from trainer.publish import BundleFiles, publish

KEYS = RedisKeys("test:")


def _manifest(version: str, status: BundleStatus = BundleStatus.PROMOTED, reason: str = "test") -> BundleManifest:
    return BundleManifest(
        version=version,
        project="5",
        labels=["a", "b"],
        backbone="resnet18",
        job_id=f"job-{version}",
        status=status,
        status_reason=reason,
        metrics={"macro_f1": 0.5},
    )


def _files(tmp_path) -> BundleFiles:
    board = tmp_path / "tb"
    board.mkdir(exist_ok=True)
    (board / "events.out.tfevents.1").write_bytes(b"x")
    png = tmp_path / "cm.png"
    png.write_bytes(b"\x89PNG")
    split = {"format_version": 1, "units": {"location:a": "train"}, "photos": {"a.jpg": ["train"]}}
    return BundleFiles({"w": torch.ones(3)}, {"test": {"macro_f1": 0.5}}, "# card\n", png, board, split=split)


def _state(models_dir):
    project_dir = models_dir / "5"
    return {
        "bundles": [m.version for m in list_bundles(models_dir, "5")],
        "current": registry.read_current(models_dir, "5"),
        "leftovers": sorted(p.name for p in project_dir.iterdir() if p.name.startswith(".tmp")),
    }


def test_publish_promoted_bundle_moves_the_pointer_and_announces_it(tmp_path, redis_client):
    models = tmp_path / "models"
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(KEYS.models_channel)
    final = publish(models, _manifest("v1"), _files(tmp_path), connection=redis_client, keys=KEYS)
    assert read_manifest(final).status == BundleStatus.PROMOTED
    assert {p.name for p in final.iterdir()} >= {
        "bundle.json",
        "classifier.safetensors",
        "metrics.json",
        "card.md",
        "confusion_matrix.png",
        "tensorboard",
        "split.json",
    }
    assert read_split(final)["units"] == {"location:a": "train"}
    assert _state(models) == {"bundles": ["v1"], "current": "v1", "leftovers": []}
    assert redis_client.get(KEYS.current("5")) == b"v1"
    message = None
    deadline = time.monotonic() + 5
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
    assert json.loads(message["data"]) == {"project": "5", "version": "v1"}


def test_publish_rejected_bundle_keeps_the_pointer_and_records_the_reason(tmp_path):
    models = tmp_path / "models"
    publish(models, _manifest("v1"), _files(tmp_path), connection=None, keys=KEYS)
    final = publish(
        models,
        _manifest("v2", BundleStatus.REJECTED, "not better: 0.4 vs 0.5"),
        _files(tmp_path),
        connection=None,
        keys=KEYS,
    )
    assert read_manifest(final).status_reason == "not better: 0.4 vs 0.5"
    assert _state(models) == {"bundles": ["v1", "v2"], "current": "v1", "leftovers": []}


def _crash(*args, **kwargs):
    raise OSError("simulated crash")


@pytest.mark.parametrize(
    ("target", "name"),
    [
        pytest.param(bundle_module.os, "rename", id="before-rename"),
        pytest.param(publish_module, "save", id="writing-weights"),
        pytest.param(publish_module, "write_manifest", id="writing-manifest"),
        pytest.param(publish_module.shutil, "copytree", id="copying-tensorboard"),
    ],
)
def test_publish_crash_leaves_no_bundle_and_the_pointer_unchanged(tmp_path, monkeypatch, target, name):
    models = tmp_path / "models"
    publish(models, _manifest("v1"), _files(tmp_path), connection=None, keys=KEYS)
    monkeypatch.setattr(target, name, _crash)
    with pytest.raises(OSError, match="simulated crash"):
        publish(models, _manifest("v2"), _files(tmp_path), connection=None, keys=KEYS)
    assert _state(models) == {"bundles": ["v1"], "current": "v1", "leftovers": []}
    assert not (models / "5" / "v2").exists()


def test_publish_after_a_killed_run_ignores_then_replaces_its_half_written_directory(tmp_path):
    models = tmp_path / "models"
    publish(models, _manifest("v1"), _files(tmp_path), connection=None, keys=KEYS)
    half = models / "5" / ".tmp-job-v2"
    half.mkdir()
    (half / "classifier.safetensors").write_bytes(b"partial")
    assert [m.version for m in list_bundles(models, "5")] == ["v1"]
    publish(models, _manifest("v2"), _files(tmp_path), connection=None, keys=KEYS)
    assert _state(models) == {"bundles": ["v1", "v2"], "current": "v2", "leftovers": []}
