"""Held-out evaluation of the new classifier and of the one being served, on the same test crops.

Figures: top-1 accuracy, macro-F1 over the species present in the test split (the gate's number),
per-species precision / recall / F1 / support, and a confusion-matrix PNG. The served model is scored
on the very same crops through its own bundle (its own labels and preprocessing); a species it does
not know counts as a miss, and if it knows none of the test species it is not scored at all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from backend.contracts.bundle import Preprocessing
from backend.errors import BundleError
from backend.vision.classifier import SpeciesClassifier, build_network
from backend.vision.device import resolve_device
from trainer.config import TrainConfig
from trainer.crops import Crop
from trainer.train import amp_dtype, macro_f1, make_eval_loader, predict

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


def evaluate_network(
    state_dict: dict[str, torch.Tensor],
    crops: Sequence[Crop],
    labels: Sequence[str],
    preprocessing: Preprocessing,
    config: TrainConfig,
) -> Evaluation:
    """Score freshly trained weights on ``crops`` with the inference preprocessing."""
    device = resolve_device(config.device)
    model = build_network(config.backbone, len(labels))
    model.load_state_dict(state_dict)
    model.to(device)
    index = {label: i for i, label in enumerate(labels)}
    samples = [(c.path, index[c.label]) for c in crops]
    loader = make_eval_loader(samples, preprocessing, config, device)
    return score([t for _, t in samples], predict(model, loader, device, amp_dtype(device)), labels)


def evaluate_served(
    bundle: Path, crops: Sequence[Crop], labels: Sequence[str], device: str | None = None
) -> tuple[Evaluation | None, str]:
    """Score the served bundle on the same crops, mapped onto the new label list by species name.

    Returns:
        The evaluation (None when it cannot be made) and a note saying how comparable it is.
    """
    try:
        classifier = SpeciesClassifier.load(bundle, resolve_device(device))
    except BundleError as exc:
        logger.warning("served model %s cannot be loaded: %s", bundle.name, exc)
        return None, f"the served model could not be loaded: {exc}"
    shared = set(classifier.labels) & {c.label for c in crops}
    if not shared:
        return None, "the served model knows none of the test species"
    index = {label: i for i, label in enumerate(labels)}
    predicted = []
    for start in range(0, len(crops), 64):
        images = [_open(c.path) for c in crops[start : start + 64]]
        predicted += [index.get(p.label, UNKNOWN) for p in classifier.classify(images)]
    evaluation = score([index[c.label] for c in crops], predicted, labels)
    same = set(classifier.labels) == set(labels)
    note = (
        "same species list"
        if same
        else (
            f"different species lists (served {len(classifier.labels)}, new {len(labels)}, shared {len(shared)}); "
            "species the served model lacks count as misses"
        )
    )
    return evaluation, note


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
