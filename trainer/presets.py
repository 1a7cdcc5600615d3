"""Train-time augmentation of square crops. Evaluation uses ``backend.vision.crop.eval_transform`` only.

Camera-trap crops vary in framing (box jitter), side (animals face both ways), exposure (day, dusk,
IR flash) and sharpness (motion); the augmentations mirror that and nothing else: no vertical flips
or large rotations, which never occur on a fixed camera.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms import v2

from backend.contracts.bundle import Preprocessing


@dataclass(frozen=True)
class BoxJitter:
    """Jittered copies of each human box, cut from the photo for training (``trainer.crops``).

    MegaDetector's boxes are looser than an annotator's and off-centre by a few percent; a classifier
    that only ever saw tight human boxes meets those at serving time. The random resized crop below
    covers tighter framings (zoom in); these copies cover looser and shifted ones with real pixels.
    """

    copies: int = 2
    """Jittered copies per human box."""
    scale: tuple[float, float] = (0.95, 1.35)
    """Range of the box's size factor (about its centre)."""
    shift: float = 0.1
    """Largest shift of the centre, as a share of the box's size."""


#: The jitter every training run uses.
BOX_JITTER = BoxJitter()


def train_transform(
    preprocessing: Preprocessing,
    *,
    min_scale: float = 0.6,
    hflip_prob: float = 0.5,
    color_jitter: float = 0.3,
    grayscale_prob: float = 0.1,
) -> Callable[[Image.Image], torch.Tensor]:
    """The training pipeline for a square crop, ending in the same tensor format as inference.

    Args:
        preprocessing: Input size and normalization of the bundle being trained.
        min_scale: Smallest area share kept by the random resized crop (box jitter).
        hflip_prob: Probability of a horizontal flip.
        color_jitter: Brightness / contrast / saturation jitter strength.
        grayscale_prob: Probability of a grayscale crop (night-time IR photos are grayscale).
    """
    size = preprocessing.input_size
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop((size, size), scale=(min_scale, 1.0), ratio=(0.8, 1.25), antialias=True),
            v2.RandomHorizontalFlip(hflip_prob),
            v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter),
            v2.RandomGrayscale(grayscale_prob),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std)),
        ]
    )
