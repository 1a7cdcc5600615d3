"""The species classifier: torchvision backbones, built the same way for training and serving.

A loaded bundle crops with its own crop rule (``preprocessing.crop``, refused when unknown), feeds the
crop through that rule's resize chain, and turns logits into probabilities with the bundle's
calibration when it has one (temperature and class-prior correction), so ``SPECIES_THRESHOLD`` compares
a calibrated probability. Scores are computed in float32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torchvision import models

from backend.contracts import registry
from backend.contracts.bundle import WEIGHTS_FILE, BundleManifest, bundle_dir, read_manifest
from backend.errors import BundleError
from backend.vision.crop import crop_rule, input_transform

logger = logging.getLogger(__name__)


def build_network(backbone: str, num_classes: int, imagenet_weights: bool = False) -> nn.Module:
    """A torchvision classification model with a fresh ``num_classes`` head.

    Args:
        backbone: A torchvision model name (``efficientnet_b0``, ``resnet50``, ``mobilenet_v3_small``...).
        num_classes: Size of the new head.
        imagenet_weights: Start from ImageNet weights if they are in the local torch cache; they are
            never downloaded here. Without them the backbone starts from random weights (logged).

    Raises:
        BundleError: the backbone name is not a torchvision classification model.
    """
    if backbone not in models.list_models(module=models):
        raise BundleError(
            f"unknown backbone {backbone!r}; use a torchvision classification model such as "
            "efficientnet_b0, resnet50 or mobilenet_v3_large"
        )
    weights = _cached_imagenet_weights(backbone) if imagenet_weights else None
    network = models.get_model(backbone, weights=weights)
    _replace_head(network, num_classes)
    return network


def _cached_imagenet_weights(backbone: str) -> models.WeightsEnum | None:
    weights = models.get_model_weights(backbone).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached.is_file():
        return weights
    logger.warning(
        "ImageNet weights for %s are not in the torch cache (%s); training starts from random weights",
        backbone,
        cached,
    )
    return None


def _replace_head(network: nn.Module, num_classes: int) -> None:
    """Swap the last Linear layer (the ImageNet head) for one with ``num_classes`` outputs."""
    name, head = [(n, m) for n, m in network.named_modules() if isinstance(m, nn.Linear)][-1]
    parent = network.get_submodule(name.rpartition(".")[0]) if "." in name else network
    setattr(parent, name.rpartition(".")[2], nn.Linear(head.in_features, num_classes))


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float


class SpeciesClassifier:
    """One loaded bundle: the network, its label map, its crop rule, resize chain and calibration.

    Raises:
        BundleError: the manifest names a crop rule this version does not know.
    """

    def __init__(self, manifest: BundleManifest, network: nn.Module, device: torch.device) -> None:
        self.manifest = manifest
        self.crop = crop_rule(manifest.preprocessing.crop)
        """``(image, normalized bbox) -> square crop or None``, by the bundle's rule."""
        self.network = network.to(device).eval()
        self.device = device
        self.transform = input_transform(manifest.preprocessing)
        calibration = manifest.calibration
        self._temperature = calibration.temperature if calibration else 1.0
        self._log_prior = torch.tensor(calibration.log_prior, dtype=torch.float32) if calibration else None

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @classmethod
    def load(cls, directory: Path, device: torch.device | str = "cpu") -> SpeciesClassifier:
        """Load a bundle directory (see ``backend.contracts.bundle``).

        Raises:
            BundleError: the bundle is incomplete or its weights do not fit its manifest.
        """
        manifest = read_manifest(directory)
        network = build_network(manifest.backbone, len(manifest.labels))
        try:
            network.load_state_dict(load_file(directory / WEIGHTS_FILE))
        except (RuntimeError, OSError, SafetensorError) as exc:
            raise BundleError(f"weights in {directory} do not fit {manifest.backbone}: {exc}") from exc
        return cls(manifest, network, torch.device(device))

    @torch.inference_mode()
    def logits(self, crops: list[Image.Image], batch_size: int = 64) -> torch.Tensor:
        """Raw float32 logits ``[len(crops), len(labels)]`` (on the CPU), before calibration."""
        out = []
        for start in range(0, len(crops), batch_size):
            batch = torch.stack([self.transform(c) for c in crops[start : start + batch_size]])
            out.append(self.network(batch.to(self.device)).float().cpu())
        return torch.cat(out) if out else torch.empty((0, len(self.labels)))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities of raw logits (the plain softmax for a bundle without calibration)."""
        scaled = logits.float() / self._temperature
        if self._log_prior is not None:
            scaled = scaled + self._log_prior
        return scaled.softmax(dim=1)

    def classify(self, crops: list[Image.Image], batch_size: int = 64) -> list[Prediction]:
        """Top-1 species and its (calibrated) probability for each crop, in order."""
        probs = self.probabilities(self.logits(crops, batch_size))
        if not len(probs):
            return []
        scores, indices = probs.max(dim=1)
        return [Prediction(self.labels[i], float(s)) for s, i in zip(scores.tolist(), indices.tolist(), strict=True)]


def load_served(models_dir: Path, project: str, device: torch.device | str = "cpu") -> SpeciesClassifier | None:
    """The classifier ``current.json`` names for ``project``, or None when it serves none.

    Raises:
        BundleError: the pointer names a bundle that cannot be loaded.
    """
    version = registry.read_current(models_dir, project)
    if version is None:
        return None
    return SpeciesClassifier.load(bundle_dir(models_dir, project, version), device)
