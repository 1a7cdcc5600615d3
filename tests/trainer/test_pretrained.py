"""Starting weights: downloaded by torch.hub when missing, random (and said so) offline, mdlite from MegadetectorLite.

The internet is mocked by a local HTTP server (``http.server`` on 127.0.0.1) that serves a small state-dict
file under a torchvision-style name ``<model>-<sha256 prefix>.pth``; ``PRETRAINED_URL`` points torch.hub at
it instead of download.pytorch.org, and ``TORCH_HOME`` at an empty cache. Everything else is real: torch.hub's
download, cache and hash check, ``camtrap train BASE`` as a subprocess, the bundle, card and TorchScript file.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import models

from backend.config import Settings
from backend.contracts.bundle import NO_PRETRAINED, read_manifest
from backend.vision import mdlite_assets
from backend.vision.classifier import SpeciesClassifier
from tests.trainer.fake_label_studio import synthetic_project
from tests.trainer.folders import FOLDER_FLAGS, camtrap, project_folder
from trainer.config import TrainConfig
from trainer.pretrained import offline_fallback, starting_weights
from trainer.torchscript import MODEL_FILE, load_torchscript

BACKBONE = "mobilenet_v3_small"


class _Server:
    """A local stand-in for download.pytorch.org: serves one directory and counts the GETs per path."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(directory), **kwargs)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture
def weights_server(tmp_path: Path) -> Iterator[tuple[_Server, str, Path]]:
    """The mocked internet: a random-init ``mobilenet_v3_small`` state dict named ``<model>-<sha8>.pth``."""
    served = tmp_path / "served"
    served.mkdir()
    scratch = served / "state.pth"
    torch.manual_seed(7)
    torch.save(models.get_model(BACKBONE, weights=None).state_dict(), scratch)
    digest = hashlib.sha256(scratch.read_bytes()).hexdigest()
    name = f"{BACKBONE}-{digest[:8]}.pth"
    scratch.rename(served / name)
    server = _Server(served)
    server.thread.start()
    try:
        yield server, f"{server.url}/{name}", served / name
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_missing_weights_are_downloaded_once_hash_checked_and_recorded(weights_server, tmp_path, monkeypatch):
    server, url, served = weights_server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    state, start = starting_weights(BACKBONE, url=url)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / served.name
    assert cached.is_file() and server.requests == [f"/{served.name}"]
    assert start.pretrained and start.source == url
    assert start.sha256 == hashlib.sha256(served.read_bytes()).hexdigest()
    expected = torch.load(served, weights_only=True)
    assert state is not None and all(torch.equal(state[k], expected[k]) for k in expected)
    again, _ = starting_weights(BACKBONE, url=url)
    assert again is not None and server.requests == [f"/{served.name}"]  # the cache, not the network


def test_a_download_whose_hash_differs_from_its_name_is_refused(weights_server, tmp_path, monkeypatch):
    server, url, served = weights_server
    wrong = served.with_name(f"{BACKBONE}-00000000.pth")
    served.rename(wrong)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    state, start = starting_weights(BACKBONE, url=f"{server.url}/{wrong.name}")
    assert state is None and not start.pretrained and start.sha256 is None
    assert "invalid hash value" in start.source
    assert start.describe().startswith(f"{NO_PRETRAINED} (random init): ImageNet weights are not in ")


def test_camtrap_train_base_downloads_the_weights_when_the_cache_is_empty(weights_server, tmp_path):
    server, url, served = weights_server
    base = project_folder(tmp_path / "season", synthetic_project(tmp_path / "photos"))
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "d"),
        "OMP_NUM_THREADS": "1",
        "TORCH_HOME": str(tmp_path / "torch"),
        "PRETRAINED_URL": url,
    }
    done = camtrap(["train", str(base), *FOLDER_FLAGS, "--backbone", BACKBONE], env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert server.requests == [f"/{served.name}"]
    assert (tmp_path / "torch" / "hub" / "checkpoints" / served.name).is_file()
    bundle = Path(json.loads(done.stdout)["bundle"])
    start = read_manifest(bundle).starting_weights
    assert start is not None and start.pretrained and start.source == url
    assert start.sha256 == hashlib.sha256(served.read_bytes()).hexdigest()
    card = (bundle / "card.md").read_text()
    assert f"- starting weights: IMAGENET1K_V1 (MobileNet_V3_Small_Weights) from {url} (sha256 {start.sha256})" in card
    assert json.loads((bundle / "metrics.json").read_text())["training"]["starting_weights"]["pretrained"] is True


def test_camtrap_train_base_offline_trains_from_random_weights_and_says_so(tmp_path):
    base = project_folder(tmp_path / "season", synthetic_project(tmp_path / "photos"))
    unreachable = "http://127.0.0.1:9/resnet18-f37072fd.pth"  # port 9 (discard): nothing listens
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "d"),
        "OMP_NUM_THREADS": "1",
        "TORCH_HOME": str(tmp_path / "torch"),
        "PRETRAINED_URL": unreachable,
    }
    done = camtrap(["train", str(base), *FOLDER_FLAGS], env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resnet18: no pretrained weights (random init): ImageNet weights are not in " in done.stderr
    bundle = Path(json.loads(done.stdout)["bundle"])
    start = read_manifest(bundle).starting_weights
    assert start is not None and (start.name, start.pretrained, start.sha256) == ("random", False, None)
    assert f"could not be downloaded from {unreachable}" in start.source
    assert "- starting weights: no pretrained weights (random init): " in (bundle / "card.md").read_text()


def test_train_backbone_mdlite_trains_serves_and_exports_torchscript(tmp_path):
    if not mdlite_assets.asset_paths()[0].is_file():
        mdlite_assets.fetch()  # PyPI (the zamba wheel); set-up scripts do this once
    base = project_folder(tmp_path / "season", synthetic_project(tmp_path / "photos"))
    env = {**os.environ, "DATA_DIR": str(tmp_path / "d"), "OMP_NUM_THREADS": "1", "TRAIN_BACKBONE": "mdlite"}
    flags = [f for f in FOLDER_FLAGS if f not in ("--backbone", "resnet18")]
    flags[flags.index("--input-size") + 1] = "64"
    done = camtrap(["train", str(base), *flags], env)
    assert done.returncode == 0, done.stderr[-2000:]
    bundle = Path(json.loads(done.stdout)["bundle"])
    manifest = read_manifest(bundle)
    assert manifest.backbone == "mdlite"
    assert (manifest.preprocessing.mean, manifest.preprocessing.std) == ((0.0, 0.0, 0.0), (1 / 255,) * 3)
    assert manifest.starting_weights is not None and manifest.starting_weights.name == "MegadetectorLite"
    assert manifest.starting_weights.sha256 == mdlite_assets.WEIGHTS_SHA256
    classifier = SpeciesClassifier.load(bundle)
    crops = sorted((tmp_path / "photos").rglob("*.jpg"))[:4]
    images = [Image.open(p).convert("RGB") for p in crops]
    predictions = classifier.classify(images)
    assert len(predictions) == len(images) and all(p.label in manifest.labels for p in predictions)
    module, labels, size = load_torchscript(base / "logs" / MODEL_FILE)
    assert labels == manifest.labels and size == 64
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    batch = torch.stack([classifier.transform(i) for i in images])  # 0..255 RGB, the bundle's own input
    as_imagenet = (batch / 255 - mean) / std  # what run_classifier.py feeds
    with torch.inference_mode():
        assert torch.allclose(module(as_imagenet), classifier.network(batch), atol=1e-3)


def test_offline_backbone_replaces_the_default_backbone_without_imagenet_weights(weights_server, tmp_path, monkeypatch):
    server, url, served = weights_server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("TRAIN_BACKBONE", raising=False)
    closed = "http://127.0.0.1:9/x-04.pth"  # port 9: nothing listens
    offline = TrainConfig.from_settings(Settings(data_dir=tmp_path / "d", pretrained_url=closed))
    assert (offline.backbone, offline.offline_backbone) == ("efficientnet_b0", "mdlite")
    assert offline_fallback(offline).backbone == "mdlite"
    online = TrainConfig.from_settings(Settings(data_dir=tmp_path / "d", pretrained_url=url))
    assert offline_fallback(online) == online and server.requests == [f"/{served.name}"]
    chosen = TrainConfig.from_settings(Settings(data_dir=tmp_path / "d", pretrained_url=closed), backbone=BACKBONE)
    assert offline_fallback(chosen) == chosen
    monkeypatch.setenv("TRAIN_BACKBONE", "efficientnet_b0")
    configured = TrainConfig.from_settings(Settings(data_dir=tmp_path / "d", pretrained_url=closed))
    assert offline_fallback(configured) == configured


def test_camtrap_fetch_imagenet_fills_the_torch_cache_or_says_how_to(weights_server, tmp_path):
    server, url, served = weights_server
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "PRETRAINED_URL": url}
    done = camtrap(["fetch", "imagenet", "--backbone", BACKBONE], env)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / served.name
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == f"imagenet: {cached}\n" and cached.read_bytes() == served.read_bytes()
    offline = camtrap(["fetch", "imagenet"], {**env, "PRETRAINED_URL": "http://127.0.0.1:9/e-7f5810bc.pth"})
    assert offline.returncode == 1 and "Traceback" not in offline.stderr
    assert "could not fetch the ImageNet weights of efficientnet_b0 from http://127.0.0.1:9/" in offline.stderr
    assert f"copy e-7f5810bc.pth into {cached.parent} by hand" in offline.stderr
