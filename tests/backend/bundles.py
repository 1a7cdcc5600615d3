"""Small classifier bundles built in tests (random mobilenet_v3_small weights, 64 px input)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from backend.contracts.bundle import (
    WEIGHTS_FILE,
    BundleManifest,
    Preprocessing,
    commit_bundle,
    staging_dir,
    write_manifest,
)
from backend.vision.classifier import build_network

ENA24_SPECIES = [
    "Virginia Opossum",
    "Eastern Fox Squirrel",
    "American Black Bear",
    "American Crow",
    "Striped Skunk",
    "Chicken",
    "Grey Fox",
]


def write_bundle(models_dir: Path, project: str, version: str, favourite: str, labels: list[str] | None = None) -> Path:
    """Commit a bundle whose head strongly prefers ``favourite`` (so its top-1 is known in advance)."""
    labels = labels or ENA24_SPECIES
    torch.manual_seed(0)
    network = build_network("mobilenet_v3_small", len(labels))
    head = [m for m in network.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.mul_(0.01)
        head.bias.zero_()
        head.bias[labels.index(favourite)] = 12.0
    manifest = BundleManifest(
        version=version,
        project=project,
        labels=labels,
        backbone="mobilenet_v3_small",
        preprocessing=Preprocessing(input_size=64),
    )
    staging = staging_dir(models_dir, project, f"job-{version}")
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(staging / WEIGHTS_FILE))
    write_manifest(staging, manifest)
    return commit_bundle(staging, models_dir, manifest)
