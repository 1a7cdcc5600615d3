"""Crops per second through the training data pipeline and through the model's train step, separately.

(a) data: the job's own loader (``trainer.train.make_train_loader``: PNG crops on disk, the train
    augmentation, class-balanced sampling) with ``--workers`` loader processes, batches discarded;
(b) model: ``trainer.train.train_one_epoch`` on batches already in memory (CUDA + AMP when present),
    i.e. forward, loss, backward and AdamW step only.

Crops are cut from the shared ENA24 photos with the inference crop and stored as the job stores them
(PNG, at most twice the input size). Whichever rate is lower bounds training; the script says which.
Usage::

    .venv/bin/python -m bench.train_throughput --backbone efficientnet_b0 --input-size 224
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from backend.config import Settings
from backend.contracts.bundle import Preprocessing
from backend.vision.classifier import build_network
from backend.vision.crop import CROP_STORE_FACTOR, crop_square
from backend.vision.decode import decode_image
from tests.conftest import DEFAULT_IMAGES
from trainer.config import TrainConfig
from trainer.train import amp_dtype, make_train_loader, resolve_device, seed_everything, train_one_epoch

logger = logging.getLogger("bench.train_throughput")

#: Boxes cut from each photo (normalized x, y, w, h): several sizes, like real detections.
BOXES = ((0.1, 0.1, 0.8, 0.8), (0.3, 0.3, 0.3, 0.4), (0.05, 0.4, 0.25, 0.2), (0.55, 0.2, 0.4, 0.35))


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Training throughput: data pipeline vs model step.", add_help=add_help)
    parser.add_argument("--backbone", default="efficientnet_b0", help="torchvision model (default: efficientnet_b0)")
    parser.add_argument("--input-size", type=int, default=224, help="network input in pixels (default: 224)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    parser.add_argument("--workers", type=int, default=2, help="data loader processes (default: 2)")
    parser.add_argument("--batches", type=int, default=8, help="timed batches in each measurement (default: 8)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: CUDA when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES, help=f"photos (default: {DEFAULT_IMAGES})")
    return parser


def make_crops(image_dir: Path, out_dir: Path, max_side: int) -> list[Path]:
    """Crop every photo with :data:`BOXES` and store the crops as the training job does."""
    paths = []
    for photo in sorted(image_dir.glob("*.jpg")):
        image = decode_image(photo.read_bytes(), max_pixels=200_000_000)
        for index, box in enumerate(BOXES):
            crop = crop_square(image, box)
            if crop.width > max_side:
                crop = crop.resize((max_side, max_side), reducing_gap=3.0)
            path = out_dir / f"{photo.stem}-{index}.png"
            crop.save(path, compress_level=1)
            paths.append(path)
    return paths


def data_rate(paths: list[Path], config: TrainConfig, batches: int) -> float:
    """Crops/s out of the training loader (decode + augmentation + collation), loader start-up included."""
    samples = [(p, i % 7) for i, p in enumerate(paths)]
    samples = (samples * (1 + batches * config.batch_size // len(samples)))[: batches * config.batch_size]
    loader = make_train_loader(
        samples, Preprocessing(input_size=config.input_size), config, seed_everything(0), torch.device("cpu")
    )
    start, seen = time.perf_counter(), 0
    for images, _ in loader:
        seen += len(images)
    return seen / (time.perf_counter() - start)


def model_rate(config: TrainConfig, batches: int) -> tuple[float, str]:
    """Crops/s through forward + backward + optimizer step on in-memory batches, after one warm-up step."""
    device = resolve_device(config.device)
    dtype = amp_dtype(device)
    model = build_network(config.backbone, 7).to(device)
    images = torch.randn(config.batch_size * batches, 3, config.input_size, config.input_size)
    targets = torch.randint(0, 7, (config.batch_size * batches,))
    loader = DataLoader(TensorDataset(images, targets), batch_size=config.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    criterion = nn.CrossEntropyLoss()
    warm = DataLoader(
        TensorDataset(images[: config.batch_size], targets[: config.batch_size]), batch_size=config.batch_size
    )
    train_one_epoch(model, criterion, optimizer, warm, device, scaler, dtype)
    _sync(device)
    start = time.perf_counter()
    train_one_epoch(model, criterion, optimizer, loader, device, scaler, dtype)
    _sync(device)
    return len(images) / (time.perf_counter() - start), f"{device}{'' if dtype is None else f' + AMP {dtype}'}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig.from_settings(
        Settings(),
        backbone=args.backbone,
        input_size=args.input_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        imagenet_weights=False,
    )
    with tempfile.TemporaryDirectory(prefix="train-bench-") as scratch:
        paths = make_crops(args.image_dir, Path(scratch), CROP_STORE_FACTOR * config.input_size)
        data = data_rate(paths, config, args.batches)
        data_single = data_rate(paths, replace(config, num_workers=0), args.batches)
    model, where = model_rate(config, args.batches)
    bottleneck = "the data pipeline" if data < model else "the model step"
    out = sys.stdout
    out.write(
        f"backbone {config.backbone}, input {config.input_size} px, batch {config.batch_size}, "
        f"torch threads {torch.get_num_threads()}, {len(paths)} distinct crops\n"
    )
    out.write(f"data pipeline ({config.num_workers} loader processes): {data:8.1f} crops/s\n")
    out.write(f"data pipeline (in the training process):        {data_single:8.1f} crops/s\n")
    out.write(f"model train step on {where}: {model:8.1f} crops/s\n")
    out.write(f"bottleneck: {bottleneck} ({min(data, model):.1f} crops/s bounds an epoch)\n")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main(get_args_parser().parse_args()))
