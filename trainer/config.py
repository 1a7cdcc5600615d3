"""TrainConfig: every knob of one training run, typed and immutable.

Built once per run from the settings (``TrainConfig.from_settings``), optionally with overrides
coming from the CLI or the RQ job's JSON arguments, and never mutated afterwards. The whole object
is written into the model card and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from backend.config import Settings, no_other_label


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters and data rules of one training run.

    Defaults live in one place, the settings (``backend.config``); build it with :meth:`from_settings`.

    Usage::

        config = TrainConfig.from_settings(settings, epochs=3, backbone="mobilenet_v3_small")
    """

    backbone: str
    input_size: int
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    patience: int
    """Epochs without validation macro-F1 improvement before early stopping."""
    seed: int
    num_workers: int
    """DataLoader worker processes (0: load in the training process)."""
    val_fraction: float
    test_fraction: float
    min_examples_per_class: int
    other_label: str | None
    location_fields: tuple[str, ...]
    sequence_gap_s: float
    """Photos of one place at most this many seconds apart are one sequence (a split unit)."""
    promotion_min_gain: float
    gate_min_test_per_class: int
    gate_confidence: float
    device: str | None
    """``cuda``, ``cpu`` or None for CUDA when available."""
    imagenet_weights: bool = True
    """Start from the backbone's pretrained weights (``trainer.pretrained``); False: random weights."""
    pretrained_url: str = ""
    """``PRETRAINED_URL``: where torchvision backbones' ImageNet weights are downloaded from ('' = torchvision's)."""
    offline_backbone: str = ""
    """``OFFLINE_BACKBONE``: trained instead of the default backbone when its ImageNet weights cannot be had ('' =
    none); empty when the backbone was chosen (``TRAIN_BACKBONE`` set, or an override)."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError(
                f"epochs, batch_size and patience must be >= 1 (got {self.epochs}, {self.batch_size}, {self.patience})"
            )
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError(
                f"val_fraction + test_fraction must leave at least 20% for training "
                f"(got {self.val_fraction} + {self.test_fraction})"
            )
        if self.input_size < 16:
            raise ValueError(f"input_size must be >= 16 pixels (got {self.input_size})")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TrainConfig:
        """The settings' training defaults, with ``overrides`` (field names of this class) on top.

        Raises:
            ValueError: an override names no field of TrainConfig, or a value is out of range.
        """
        base = {
            "backbone": settings.train_backbone,
            "input_size": settings.train_image_size,
            "epochs": settings.train_epochs,
            "batch_size": settings.train_batch_size,
            "learning_rate": settings.train_learning_rate,
            "weight_decay": settings.train_weight_decay,
            "patience": settings.train_patience,
            "seed": settings.train_seed,
            "num_workers": settings.train_num_workers,
            "val_fraction": settings.train_val_fraction,
            "test_fraction": settings.train_test_fraction,
            "min_examples_per_class": settings.min_examples_per_class,
            "other_label": settings.other_label,
            "location_fields": tuple(settings.location_fields),
            "sequence_gap_s": settings.sequence_gap_s,
            "promotion_min_gain": settings.promotion_min_gain,
            "gate_min_test_per_class": settings.gate_min_test_per_class,
            "gate_confidence": settings.gate_confidence,
            "device": settings.train_device,
            "pretrained_url": settings.pretrained_url,
            # the offline default replaces only a backbone nobody chose (TRAIN_BACKBONE unset, no override)
            "offline_backbone": (
                settings.offline_backbone
                if "train_backbone" not in settings.model_fields_set and "backbone" not in overrides
                else ""
            ),
        }
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; valid options are {sorted(known)}")
        if "other_label" in overrides:
            overrides["other_label"] = no_other_label(overrides["other_label"])
        if "location_fields" in overrides:
            overrides["location_fields"] = tuple(overrides["location_fields"])
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy (for the model card, metrics.json and job arguments)."""
        data = dataclasses.asdict(self)
        data["location_fields"] = list(self.location_fields)
        return data
