"""Every crop of a folder through a classifier, into ``model_results.csv``.

MODEL is a bundle directory (``bundle.json``), a TorchScript ``model.pt`` (ours, or any model
MegaDetector's ``run_classifier.py`` takes, with a ``label_index.json`` or ``label_correspondance.json``
beside it), or a folder holding one of them (``BASE/logs``). The output has one row per crop:

- ``path``: relative to CROPS, as ``run_classifier.py`` writes it (``os.path.relpath`` joined to the
  sub-folder, so a file at the top is ``./name``);
- ``label`` and ``score``: the top-1 class and its probability;
- one column per class, in label-index order: the softmax probabilities (``run_classifier.py``'s columns).

Each crop is squared first (zero-padded, as training did), then resized to the model's input size and
normalised. Crops are read in batches on a loader thread; CUDA is used when present (``--device``).
An unreadable crop is reported and left out, never fatal. The CSV is written to a temporary file and
renamed at the end.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from backend.contracts.bundle import MANIFEST_FILE, Preprocessing
from backend.errors import ImageError
from backend.formats.atomic import atomic_target
from backend.vision.classifier import SpeciesClassifier
from backend.vision.crop import crop_square, eval_transform
from backend.vision.decode import decode_image

logger = logging.getLogger(__name__)

#: File suffixes taken as crops (case-insensitive).
CROP_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
WHOLE = (0.0, 0.0, 1.0, 1.0)


@dataclass
class LoadedModel:
    """A classifier ready to run: ``forward(batch) -> logits``, its labels and its input transform."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    labels: list[str]
    transform: Callable[[Image.Image], torch.Tensor]
    device: torch.device
    source: str


def load_model(path: Path, device: torch.device) -> LoadedModel:
    """A bundle directory, a TorchScript file, or a folder with ``model.pt`` in it.

    Raises:
        ValueError: nothing loadable at ``path`` (the message says what was expected).
        BundleError: the bundle is incomplete.
    """
    from trainer.torchscript import MODEL_FILE, load_torchscript

    if path.is_dir() and (path / MANIFEST_FILE).is_file():
        classifier = SpeciesClassifier.load(path, device)
        network = classifier.network
        return LoadedModel(network, classifier.labels, classifier.transform, device, f"bundle {classifier.version}")
    if path.is_dir() and (path / MODEL_FILE).is_file():
        path = path / MODEL_FILE
    if path.is_file():
        module, labels, input_size = load_torchscript(path, device)
        # model.pt takes ImageNet-normalised input (run_classifier.py's), whatever the bundle's statistics
        return LoadedModel(module, labels, eval_transform(Preprocessing(input_size=input_size)), device, str(path))
    raise ValueError(f"{path} is neither a model bundle (a folder with {MANIFEST_FILE}) nor a TorchScript model.pt")


def list_crops(crops_dir: Path) -> list[str]:
    """Every crop under ``crops_dir``, as ``run_classifier.py`` names them (``os.walk`` + ``relpath``), sorted."""
    found = []
    for folder, _, files in os.walk(crops_dir):
        relative = os.path.relpath(folder, crops_dir)
        for name in files:
            if Path(name).suffix.lower() in CROP_SUFFIXES and not name.startswith("."):
                found.append(os.path.join(relative, name).replace(os.sep, "/"))
    return sorted(found)


class _CropFiles(Dataset):
    def __init__(self, root: Path, names: Sequence[str], transform: Callable, max_pixels: int) -> None:
        self.root, self.names, self.transform, self.max_pixels = root, list(names), transform, max_pixels

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, str, str]:
        name = self.names[index]
        try:
            image = decode_image((self.root / name).read_bytes(), max_pixels=self.max_pixels)
        except OSError as exc:
            return None, name, f"cannot read: {exc.strerror or exc}"
        except ImageError as exc:
            return None, name, str(exc)
        square = crop_square(image, WHOLE)
        assert square is not None  # a decoded image has pixels
        return self.transform(square), name, ""


def _collate(items: list[tuple[torch.Tensor | None, str, str]]) -> list[tuple[torch.Tensor | None, str, str]]:
    return items


@torch.inference_mode()
def classify_folder(
    model: LoadedModel,
    crops_dir: Path,
    output: Path,
    *,
    batch_size: int,
    workers: int,
    max_pixels: int,
    progress: bool = True,
) -> tuple[int, list[tuple[str, str]]]:
    """Classify every crop and write the CSV.

    Returns:
        The number of rows written, and ``(path, reason)`` of each crop that could not be read.
    """
    names = list_crops(crops_dir)
    loader = DataLoader(
        _CropFiles(crops_dir, names, model.transform, max_pixels),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
    )
    failed: list[tuple[str, str]] = []
    rows = 0
    with atomic_target(output) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label", "score", *model.labels])
        bar = tqdm(total=len(names), unit="crop", desc="classifying", disable=not progress, file=sys.stderr)
        for items in loader:
            good = [(tensor, name) for tensor, name, _ in items if tensor is not None]
            failed += [(name, reason) for tensor, name, reason in items if tensor is None]
            if good:
                batch = torch.stack([tensor for tensor, _ in good]).to(model.device)
                probs = model.forward(batch).float().softmax(dim=1).cpu()
                for (_, name), p in zip(good, probs.tolist(), strict=True):
                    top = max(range(len(p)), key=p.__getitem__)
                    writer.writerow([name, model.labels[top], f"{p[top]:.6f}", *(f"{v:.6f}" for v in p)])
                    rows += 1
            bar.update(len(items))
        bar.close()
    for name, reason in failed:
        logger.warning("crop %s skipped: %s", name, reason)
    return rows, failed
