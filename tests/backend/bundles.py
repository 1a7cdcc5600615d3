"""The one builder of classifier bundles in tests and benchmarks (random mobilenet_v3_small weights).

:func:`stage_bundle` writes a bundle's files into its staging directory, as the trainer does before
committing (for tests of the commit itself); :func:`write_bundle` commits it through
``backend.contracts.bundle.commit_bundle`` and, with ``serve=True``, points the project at it through
``backend.contracts.promotion.set_current``, as the trainer's publisher does for a promoted bundle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from backend.contracts.bundle import (
    METRICS_FILE,
    WEIGHTS_FILE,
    BundleManifest,
    BundleStatus,
    Preprocessing,
    commit_bundle,
    new_version,
    staging_dir,
    write_manifest,
)
from backend.contracts.keys import RedisKeys
from backend.contracts.promotion import set_current
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


def stage_bundle(
    models_dir: Path,
    project: str,
    version: str | None = None,
    *,
    favourite: str | None = None,
    labels: Sequence[str] | None = None,
    input_size: int = 64,
    job_id: str | None = None,
    status: BundleStatus = BundleStatus.PROMOTED,
    reason: str = "",
    metrics: dict[str, float] | None = None,
    metrics_file: dict[str, Any] | None = None,
) -> tuple[Path, BundleManifest]:
    """Write weights, manifest and (when given) ``metrics.json`` into the project's staging directory.

    Args:
        models_dir: ``DATA_DIR/models``.
        project: Project id.
        version: The bundle version; a fresh one (``new_version``) when None.
        favourite: A label the head strongly prefers (so the bundle's top-1 is known in advance);
            None leaves the random head.
        labels: Class names (the ENA24 species by default).
        input_size: Classifier input in pixels.
        job_id: The manifest's job id; also names the staging directory.
        status, reason, metrics: The manifest's gate verdict and headline figures.
        metrics_file: The contents of ``metrics.json`` (test scores, served baseline, split counts).

    Returns:
        The staging directory and the manifest.
    """
    labels = list(labels or ENA24_SPECIES)
    version = version or new_version(project, job_id)
    torch.manual_seed(0)
    network = build_network("mobilenet_v3_small", len(labels))
    if favourite is not None:
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
        preprocessing=Preprocessing(input_size=input_size),
        job_id=job_id,
        status=status,
        status_reason=reason,
        metrics=metrics or {},
    )
    staging = staging_dir(models_dir, project, job_id or f"job-{version}")
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(staging / WEIGHTS_FILE))
    if metrics_file is not None:
        (staging / METRICS_FILE).write_text(json.dumps(metrics_file))
    write_manifest(staging, manifest)
    return staging, manifest


def write_bundle(
    models_dir: Path,
    project: str,
    version: str,
    favourite: str | None = None,
    labels: Sequence[str] | None = None,
    *,
    serve: bool = False,
    **options: Any,
) -> Path:
    """Commit a bundle (see :func:`stage_bundle` for ``options``); with ``serve``, point the project at it.

    Returns:
        The committed bundle directory.
    """
    staging, manifest = stage_bundle(models_dir, project, version, favourite=favourite, labels=labels, **options)
    final = commit_bundle(staging, models_dir, manifest)
    if serve:
        set_current(models_dir, project, version, None, RedisKeys())
    return final
