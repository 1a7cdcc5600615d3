"""Fine-tune a torchvision backbone on the crops: the plain function behind both the RQ job and the CLI.

Reads in run order: data (dataset, sampler, loaders), ``train_one_epoch``, ``predict``, ``fit``.

Recipe: the network comes from ``backend.vision.classifier.build_network`` (so serving rebuilds the very same
module), the backbone's pretrained weights (``trainer.pretrained``: ImageNet through torch.hub, downloaded
once; MegadetectorLite's for ``mdlite``; random, and said so, when there are none), inverse-frequency weighted sampling
(rare species are seen as often as common ones), label smoothing 0.1, AdamW with a cosine schedule,
AMP on CUDA (bfloat16 where supported, else float16 with a gradient scaler), early stopping on the
validation macro-F1 (the best epoch's weights are kept), one seed for everything. TensorBoard event
files go to ``<run dir>/tensorboard``.

Default backbone, ``efficientnet_b0``: the best ImageNet accuracy per FLOP among torchvision's
ready-to-fine-tune models at crop scale (77.7 % top-1 for 0.39 GFLOPs at 224 px, against 75.3 % /
0.22 GFLOPs for MobileNetV3-Large, 80.9 % / 4.1 GFLOPs for ResNet-50 and 82.5 % / 4.5 GFLOPs for
ConvNeXt-T: ten times ResNet-50's compute buys 3 points). Animal crops are small, often blurry or
IR-lit, and a project has hundreds, not millions, of them, so what matters is transfer from a
compact pretrained backbone, which is also what the camera-trap classifiers of the MegaDetector
ecosystem use (EfficientNet in MegaClassifier and SpeciesNet). It serves at a few ms per crop on a
CPU, next to the detector. ``TRAIN_BACKBONE`` takes any torchvision classification model name, or
``mdlite``: MegadetectorLite's camera-trap-trained YOLOX-tiny backbone, which needs no download beyond
``camtrap fetch mdlite`` (``bench/transfer.py`` compares it with random-init EfficientNet-B0).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from backend.contracts.bundle import Preprocessing, StartingWeights
from backend.vision.classifier import build_network
from backend.vision.crop import eval_transform
from backend.vision.device import resolve_device
from trainer.config import TrainConfig
from trainer.presets import train_transform
from trainer.pretrained import starting_weights

logger = logging.getLogger(__name__)

#: A training example: the crop file and its class index.
Sample = tuple[Path, int]


class CropDataset(Dataset):
    """Crops on disk with their class index, through a transform."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), target


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float
    val_macro_f1: float
    lr: float
    seconds: float


@dataclass
class FitResult:
    """The best epoch's weights (on the CPU) and the run's history."""

    state_dict: dict[str, torch.Tensor]
    best_epoch: int
    best_val_macro_f1: float
    device: str
    starting_weights: StartingWeights
    history: list[EpochStats] = field(default_factory=list)
    stopped_early: bool = False


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a generator for the sampler and loader workers."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA (bfloat16 when supported), none on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_sampler(targets: Sequence[int], generator: torch.Generator) -> WeightedRandomSampler:
    """Draw each example with probability inversely proportional to its class frequency."""
    counts = Counter(targets)
    weights = torch.tensor([1.0 / counts[t] for t in targets], dtype=torch.double)
    return WeightedRandomSampler(weights.tolist(), num_samples=len(targets), replacement=True, generator=generator)


def _loader_options(config: TrainConfig, device: torch.device) -> dict:
    return {
        "batch_size": config.batch_size,
        "num_workers": config.num_workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": config.num_workers > 0,
    }


def make_train_loader(
    samples: Sequence[Sample],
    preprocessing: Preprocessing,
    config: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
) -> DataLoader:
    """Augmented, class-balanced batches."""
    return DataLoader(
        CropDataset(samples, train_transform(preprocessing)),
        sampler=make_sampler([t for _, t in samples], generator),
        generator=generator,
        drop_last=len(samples) > config.batch_size,
        **_loader_options(config, device),
    )


def make_eval_loader(
    samples: Sequence[Sample], preprocessing: Preprocessing, config: TrainConfig, device: torch.device
) -> DataLoader:
    """The inference preprocessing (``backend.vision.crop.eval_transform``), in order."""
    return DataLoader(
        CropDataset(samples, eval_transform(preprocessing)), shuffle=False, **_loader_options(config, device)
    )


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    device: torch.device,
    scaler: torch.amp.GradScaler | None,
    dtype: torch.dtype | None,
    on_batch: Callable[[], None] | None = None,
) -> float:
    """One pass over the training loader; returns the mean loss."""
    model.train()
    total, seen = 0.0, 0
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with _autocast(device, dtype):
            loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total += loss.item() * len(targets)
        seen += len(targets)
        if on_batch is not None:
            on_batch()
    return total / max(seen, 1)


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, device: torch.device, dtype: torch.dtype | None) -> list[int]:
    """Top-1 class index of every example, in loader order."""
    model.eval()
    predictions: list[int] = []
    for images, _ in loader:
        with _autocast(device, dtype):
            logits = model(images.to(device, non_blocking=True))
        predictions += logits.argmax(dim=1).tolist()
    return predictions


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Macro-F1 over the classes present in ``y_true`` (predicting another class counts as a miss)."""
    if not len(y_true):
        return 0.0
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    scores = []
    for label in np.unique(true):
        hits = float(np.sum((true == label) & (pred == label)))
        predicted, actual = float(np.sum(pred == label)), float(np.sum(true == label))
        scores.append(2 * hits / (predicted + actual) if predicted + actual else 0.0)
    return float(np.mean(scores))


def fit(
    train: Sequence[Sample],
    val: Sequence[Sample],
    *,
    num_classes: int,
    preprocessing: Preprocessing,
    config: TrainConfig,
    run_dir: Path,
    on_epoch: Callable[[EpochStats, int], None] | None = None,
    on_batch: Callable[[], None] | None = None,
    on_start: Callable[[StartingWeights], None] | None = None,
) -> FitResult:
    """Train a classifier and return the weights of its best validation epoch.

    Args:
        train: Training crops and class indices.
        val: Validation crops (early stopping); must not be empty.
        num_classes: Size of the head.
        preprocessing: Input size and normalization (written into the bundle as is).
        config: Hyper-parameters.
        run_dir: TensorBoard event files go to ``run_dir/tensorboard``.
        on_epoch: Called after each epoch with its stats and the number of epochs.
        on_batch: Called after each training step (progress / liveness checks).
        on_start: Called with the starting weights (``trainer.pretrained``) before the first epoch.
    """
    generator = seed_everything(config.seed)
    device = resolve_device(config.device)
    dtype = amp_dtype(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    logger.info(
        "training %s on %s (%d train / %d val crops, %d classes, amp=%s)",
        config.backbone,
        device,
        len(train),
        len(val),
        num_classes,
        dtype,
    )

    train_loader = make_train_loader(train, preprocessing, config, generator, device)
    val_loader = make_eval_loader(val, preprocessing, config, device)
    initial, starting = starting_weights(config.backbone, pretrained=config.imagenet_weights, url=config.pretrained_url)
    if on_start is not None:
        on_start(starting)
    model = build_network(config.backbone, num_classes, start=initial).to(device)
    initial = None
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    val_targets = [t for _, t in val]

    from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when training

    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    result = FitResult(
        state_dict={}, best_epoch=0, best_val_macro_f1=-1.0, device=str(device), starting_weights=starting
    )
    stale = 0
    try:
        for epoch in range(1, config.epochs + 1):
            start = time.monotonic()
            lr = optimizer.param_groups[0]["lr"]
            loss = train_one_epoch(model, criterion, optimizer, train_loader, device, scaler, dtype, on_batch)
            scheduler.step()
            score = macro_f1(val_targets, predict(model, val_loader, device, dtype))
            stats = EpochStats(epoch, loss, score, lr, time.monotonic() - start)
            result.history.append(stats)
            _log_epoch(writer, stats, config.epochs)
            if on_epoch is not None:
                on_epoch(stats, config.epochs)
            if score > result.best_val_macro_f1:
                result.best_val_macro_f1, result.best_epoch, stale = score, epoch, 0
                result.state_dict = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= config.patience:
                    logger.info("early stop after epoch %d: no val macro-F1 gain for %d epochs", epoch, stale)
                    result.stopped_early = True
                    break
    finally:
        writer.close()
    return result


def _log_epoch(writer, stats: EpochStats, epochs: int) -> None:
    writer.add_scalar("train/loss", stats.loss, stats.epoch)
    writer.add_scalar("train/lr", stats.lr, stats.epoch)
    writer.add_scalar("val/macro_f1", stats.val_macro_f1, stats.epoch)
    logger.info(
        "epoch %d/%d: loss %.4f, val macro-F1 %.4f, lr %.2e, %.1f s",
        stats.epoch,
        epochs,
        stats.loss,
        stats.val_macro_f1,
        stats.lr,
        stats.seconds,
    )


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()
