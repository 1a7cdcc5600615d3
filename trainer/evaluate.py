"""Held-out evaluation of the new classifier and of the one being served, through the serving code.

Both models are run by ``backend.vision.classifier.SpeciesClassifier`` (its crop rule's resize chain,
its calibration, float32), the class the backend serves with. Figures: top-1 accuracy, macro-F1 over the
species present, per-species precision / recall / F1 / support, and a confusion-matrix PNG. Which crops
the two are compared on, and how, is the gate's business (``trainer.gate``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from backend.contracts.bundle import BundleManifest
from backend.errors import BundleError
from backend.vision.classifier import SpeciesClassifier, build_network
from backend.vision.device import resolve_device
from trainer.crops import Crop
from trainer.train import macro_f1

logger = logging.getLogger(__name__)

#: Predicted index of a species outside the evaluated label list (served model with other labels).
UNKNOWN = -1


@dataclass
class Evaluation:
    """Scores of one model on one split."""

    labels: list[str]
    count: int
    top1: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]

    def to_dict(self) -> dict:
        return asdict(self)


def score(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> Evaluation:
    """Scores of predictions (class indices into ``labels``, or :data:`UNKNOWN`)."""
    n = len(labels)
    matrix = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        if 0 <= p < n:
            matrix[t, p] += 1
    support = np.bincount(np.asarray(y_true, dtype=np.int64), minlength=n)[:n] if len(y_true) else np.zeros(n, int)
    hits = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    precision = np.divide(hits, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros(n), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=precision + recall > 0)
    per_class = {
        labels[i]: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i in range(n)
    }
    return Evaluation(
        labels=list(labels),
        count=len(y_true),
        top1=float(hits.sum() / len(y_true)) if len(y_true) else 0.0,
        macro_f1=macro_f1(y_true, y_pred),
        per_class=per_class,
        confusion=matrix.tolist() if len(y_true) else [],
    )


@dataclass
class Scored:
    """One model's answers on a list of crops, through the serving path (crop rule, chain, calibration)."""

    predicted: list[str]
    logits: torch.Tensor
    """Raw float32 logits ``[crops, labels]``."""
    probabilities: torch.Tensor
    """Calibrated probabilities (the raw softmax for a bundle without calibration)."""


def new_classifier(
    state_dict: dict[str, torch.Tensor], manifest: BundleManifest, device: torch.device | str
) -> SpeciesClassifier:
    """The freshly trained weights as the backend will load them (same class, same float32 path)."""
    network = build_network(manifest.backbone, len(manifest.labels))
    network.load_state_dict(state_dict)
    return SpeciesClassifier(manifest, network, torch.device(device))


def score_crops(classifier: SpeciesClassifier, crops: Sequence[Crop], batch_size: int = 64) -> Scored:
    """Run ``classifier`` on stored crops exactly as serving runs it on a fresh crop (float32)."""
    chunks = []
    for start in range(0, len(crops), batch_size):
        chunks.append(classifier.logits([_open(c.path) for c in crops[start : start + batch_size]], batch_size))
    logits = torch.cat(chunks) if chunks else torch.empty((0, len(classifier.labels)))
    probabilities = classifier.probabilities(logits)
    predicted = [classifier.labels[i] for i in probabilities.argmax(dim=1).tolist()] if len(logits) else []
    return Scored(predicted, logits, probabilities)


def evaluate(scored: Scored, crops: Sequence[Crop], labels: Sequence[str]) -> Evaluation:
    """Scores of ``scored`` (a model's answers on ``crops``) against the crops' labels, over ``labels``."""
    index = {label: i for i, label in enumerate(labels)}
    return score([index[c.label] for c in crops], [index.get(p, UNKNOWN) for p in scored.predicted], labels)


def load_served(bundle: Path, device: str | None) -> tuple[SpeciesClassifier | None, str]:
    """The served bundle, or None and why it cannot be loaded."""
    try:
        return SpeciesClassifier.load(bundle, resolve_device(device)), ""
    except BundleError as exc:
        logger.warning("served model %s cannot be loaded: %s", bundle.name, exc)
        return None, f"its bundle could not be loaded ({exc})"


def plot_confusion(evaluation: Evaluation, path: Path, title: str) -> None:
    """Write the confusion matrix (rows: true species, columns: predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    n = len(evaluation.labels)
    side = max(4.0, 0.55 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    try:
        matrix = evaluation.confusion or [[0] * n for _ in range(n)]
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(n), evaluation.labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), evaluation.labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=9)
        peak = max((max(row) for row in matrix), default=0)
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                if value:
                    color = "white" if value > peak / 2 else "black"
                    ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color=color)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")
