"""The species classifier: torchvision backbones or MegadetectorLite's, built the same way for training and serving.

A loaded bundle crops with its own crop rule (``preprocessing.crop``, refused when unknown), feeds the
crop through that rule's resize chain, and turns logits into probabilities with the bundle's
calibration when it has one (temperature and class-prior correction), so ``SPECIES_THRESHOLD`` compares
a calibrated probability. Scores are computed in float32.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torchvision import models

from backend.contracts import registry
from backend.contracts.bundle import WEIGHTS_FILE, BundleManifest, Preprocessing, bundle_dir, read_manifest
from backend.errors import BundleError
from backend.vision.crop import crop_rule, input_transform
from backend.vision.mdlite import CspDarknet

logger = logging.getLogger(__name__)


#: ``TRAIN_BACKBONE`` value of MegadetectorLite's YOLOX-tiny CspDarknet backbone (see :class:`MdliteClassifier`).
MDLITE_BACKBONE = "mdlite"

#: The input MegadetectorLite was trained on: RGB in 0..255, no mean/std normalisation (zamba's
#: preprocessing, ``backend.vision.mdlite.letterbox``). ``ToTensor``'s 0..1 normalised with mean 0 and
#: std 1/255 is exactly that, so an mdlite bundle keeps the ``Preprocessing`` contract unchanged.
MDLITE_MEAN = (0.0, 0.0, 0.0)
MDLITE_STD = (1 / 255, 1 / 255, 1 / 255)


def preprocessing_for(backbone: str, input_size: int) -> Preprocessing:
    """The normalisation a backbone's starting weights expect: ImageNet's, or mdlite's raw 0..255 RGB."""
    if backbone == MDLITE_BACKBONE:
        return Preprocessing(input_size=input_size, mean=MDLITE_MEAN, std=MDLITE_STD)
    return Preprocessing(input_size=input_size)


class MdliteClassifier(nn.Module):
    """MegadetectorLite's CspDarknet (YOLOX-tiny) backbone, its dark3, dark4 and dark5 maps global-average
    pooled and concatenated (96 + 192 + 384 = 672 features), then a new linear head.

    ``backbone``'s state-dict keys are the detector checkpoint's ``backbone.backbone.*`` ones, so the
    camera-trap-pretrained weights load by stripping one prefix (``trainer.pretrained``).
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = CspDarknet(depth=0.33, width=0.375)
        self.head = nn.Linear(MDLITE_FEATURES, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dark3, dark4, dark5 = self.backbone(x)
        pooled = torch.cat([dark3.mean(dim=(2, 3)), dark4.mean(dim=(2, 3)), dark5.mean(dim=(2, 3))], dim=1)
        return self.head(pooled)


#: Features of the pooled dark3-5 maps at YOLOX-tiny's width (0.375 x 256, 512, 1024).
MDLITE_FEATURES = 96 + 192 + 384


def build_network(backbone: str, num_classes: int, start: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """The classifier network with a fresh ``num_classes`` head.

    Args:
        backbone: ``mdlite`` (:class:`MdliteClassifier`) or a torchvision classification model name
            (``efficientnet_b0``, ``resnet50``, ``mobilenet_v3_small``...).
        num_classes: Size of the new head.
        start: Starting weights of the backbone (``trainer.pretrained`` finds them): the torchvision
            model's ImageNet state dict, or the CspDarknet's for mdlite. None: random weights. Serving
            passes None and loads the bundle's weights afterwards.

    Raises:
        BundleError: the backbone name is neither ``mdlite`` nor a torchvision classification model, or
            ``start`` does not fit it.
    """
    if backbone == MDLITE_BACKBONE:
        mdlite = MdliteClassifier(num_classes)
        network, target = mdlite, mdlite.backbone
    elif backbone in models.list_models(module=models):
        network = target = models.get_model(backbone, weights=None)
    else:
        raise BundleError(
            f"unknown backbone {backbone!r}; use mdlite or a torchvision classification model such as "
            "efficientnet_b0, resnet50 or mobilenet_v3_large"
        )
    if start is not None:
        try:
            target.load_state_dict(start)
        except RuntimeError as exc:
            raise BundleError(f"the starting weights do not fit {backbone}: {str(exc).splitlines()[0]}") from exc
    if backbone != MDLITE_BACKBONE:
        _replace_head(network, num_classes)
    return network


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
