"""The model bundle: the one on-disk contract between the trainer and the backend.

A bundle is a directory ``<DATA_DIR>/models/<project>/<version>/`` holding::

    bundle.json              BundleManifest (this module): format, version, labels, preprocessing, status
    classifier.safetensors   the classifier's state dict (never pickle)
    metrics.json             split counts, top-1, macro-F1, per-class P/R/F1, served-model baseline
    confusion_matrix.png     confusion matrix on the held-out split
    card.md                  human-readable model card
    split.json               which group of photos went to train / val / test (read by the next gate)
    tensorboard/             event files of the training run

The trainer writes everything into ``<project>/.tmp-<job id>/`` and calls :func:`commit_bundle`, which
renames the directory into place in one ``os.rename``: a bundle either exists whole or not at all, and
is never modified afterwards. Which bundle is served is decided by the pointer (``registry.py``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from backend.errors import BundleError, BundleNotFoundError

FORMAT_VERSION = 1
MANIFEST_FILE = "bundle.json"
WEIGHTS_FILE = "classifier.safetensors"
METRICS_FILE = "metrics.json"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
CARD_FILE = "card.md"
SPLIT_FILE = "split.json"
TENSORBOARD_DIR = "tensorboard"

#: The class of crops that hold no animal (MegaDetector boxes annotators deleted, photos marked empty);
#: a ``blank`` guess is served as no species.
BLANK_LABEL = "blank"

#: Version strings are used as directory names and inside ``model_version``.
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BundleStatus(StrEnum):
    """The gate's verdict, fixed when the bundle is written."""

    PROMOTED = "promoted"
    REJECTED = "rejected"


class Preprocessing(BaseModel):
    """How a crop becomes the classifier's input; see ``backend.vision.crop``."""

    crop: str = "square_shifted"
    """The crop rule (``backend.vision.crop``): ``square_shifted`` for new bundles; ``square`` in older ones."""
    input_size: int = Field(224, ge=16, le=1024)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


class Calibration(BaseModel):
    """How logits become calibrated probabilities: ``softmax(logits / temperature + log_prior)``.

    ``log_prior`` (one value per label) undoes the balanced sampler's uniform class prior with the
    training split's class shares; ``temperature`` is then fitted on the validation split.
    """

    temperature: float = Field(gt=0)
    log_prior: list[float]


#: What the job, the log, the card and ``GET /models`` say of a classifier trained from random weights.
NO_PRETRAINED = "no pretrained weights"


class StartingWeights(BaseModel):
    """Which weights the backbone started from, so two bundles can be compared honestly."""

    name: str
    """``IMAGENET1K_V1`` (torchvision's weights enum member), ``MegadetectorLite``, or ``random``."""
    source: str
    """The URL or file the weights came from; for random weights, why no pretrained ones were used."""
    sha256: str | None = None
    """SHA-256 of the starting weights file (None for random weights)."""
    pretrained: bool

    def describe(self) -> str:
        """One sentence: ``ImageNet ... from URL (sha256 ...)`` or ``no pretrained weights: why``."""
        if not self.pretrained:
            return f"{NO_PRETRAINED} (random init): {self.source}"
        return f"{self.name} from {self.source} (sha256 {self.sha256})"


class BundleManifest(BaseModel):
    """Contents of ``bundle.json``."""

    format_version: int = FORMAT_VERSION
    version: str
    project: str
    labels: list[str] = Field(min_length=1)
    """Class index -> species name, exactly as the project's species Choices spell them."""
    preprocessing: Preprocessing = Preprocessing()
    backbone: str
    parent_version: str | None = None
    """The version that was served when this one was trained (None: none was)."""
    job_id: str | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    status: BundleStatus = BundleStatus.PROMOTED
    status_reason: str = ""
    metrics: dict[str, float] = {}
    """Headline figures (top1, macro_f1) copied from metrics.json for listings."""
    calibration: Calibration | None = None
    """Optional (bundles without it serve the raw softmax)."""
    starting_weights: StartingWeights | None = None
    """What the backbone started from (None: a bundle written before this was recorded)."""

    @model_validator(mode="after")
    def _calibration_fits_labels(self) -> BundleManifest:
        if self.calibration is not None and len(self.calibration.log_prior) != len(self.labels):
            raise ValueError(
                f"calibration.log_prior has {len(self.calibration.log_prior)} values for {len(self.labels)} labels"
            )
        return self


def new_version(project: str, job_id: str | None = None, now: datetime | None = None) -> str:
    """A fresh, sortable version string such as ``p3-20261123T101500-3f2a``."""
    now = now or datetime.now(UTC)
    suffix = (job_id or os.urandom(2).hex())[-4:]
    suffix = re.sub(r"[^A-Za-z0-9]", "x", suffix)
    return f"p{project}-{now:%Y%m%dT%H%M%S}-{suffix}"


def validate_version(version: str) -> str:
    if not VERSION_PATTERN.match(version):
        raise BundleError(f"invalid bundle version {version!r}: use letters, digits, '.', '_' and '-'")
    return version


def project_dir(models_dir: Path, project: str) -> Path:
    return models_dir / validate_version(str(project))


def bundle_dir(models_dir: Path, project: str, version: str) -> Path:
    return project_dir(models_dir, project) / validate_version(version)


def staging_dir(models_dir: Path, project: str, job_id: str) -> Path:
    """Where a job assembles its bundle before :func:`commit_bundle` (removed first if left over)."""
    path = project_dir(models_dir, project) / f".tmp-{validate_version(job_id)}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def write_manifest(directory: Path, manifest: BundleManifest) -> None:
    (directory / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")


def read_manifest(directory: Path) -> BundleManifest:
    """Read and validate ``bundle.json``.

    Raises:
        BundleError: the directory is not a complete bundle of a format this code reads.
    """
    path = directory / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BundleNotFoundError(f"{directory} is not a model bundle: {MANIFEST_FILE} is missing") from exc
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    if data.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path} has bundle format {data.get('format_version')!r}; this version reads {FORMAT_VERSION}"
        )
    manifest = BundleManifest.model_validate(data)
    if not (directory / WEIGHTS_FILE).is_file():
        raise BundleError(f"{directory} is incomplete: {WEIGHTS_FILE} is missing")
    return manifest


def read_metrics(directory: Path) -> dict:
    path = directory / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def read_split(directory: Path) -> dict | None:
    """The bundle's ``split.json``, or None for a bundle written before it existed.

    Raises:
        BundleError: the file exists but is not a JSON object.
    """
    path = directory / SPLIT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path} is not a JSON object")
    return data


def commit_bundle(staging: Path, models_dir: Path, manifest: BundleManifest) -> Path:
    """Validate a staged bundle and rename it into place atomically.

    Returns:
        The final bundle directory.

    Raises:
        BundleError: the staged bundle is incomplete or the version already exists.
    """
    if read_manifest(staging) != manifest:
        raise BundleError(f"{staging}/{MANIFEST_FILE} does not match the manifest being committed")
    final = bundle_dir(models_dir, manifest.project, manifest.version)
    if final.exists():
        raise BundleError(f"bundle {manifest.version} already exists in {final.parent}")
    os.rename(staging, final)
    _fsync_dir(final.parent)
    return final


def list_bundles(models_dir: Path, project: str) -> list[BundleManifest]:
    """Every complete bundle of a project, oldest first. Staging and broken directories are skipped."""
    root = project_dir(models_dir, project)
    if not root.is_dir():
        return []
    manifests = []
    for child in root.iterdir():
        if child.is_dir() and not child.name.startswith("."):
            try:
                manifests.append(read_manifest(child))
            except (BundleError, ValueError):
                continue
    return sorted(manifests, key=lambda m: (m.created_at, m.version))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
