"""Which torch device a model runs on: the one rule for the detector, the classifier and training."""

from __future__ import annotations

import torch


def resolve_device(name: str | None) -> torch.device:
    """``name`` (``cuda``, ``cuda:1``, ``cpu``) if given, else CUDA when available, else the CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
