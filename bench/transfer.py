"""Transfer offline: the MegadetectorLite backbone (``TRAIN_BACKBONE=mdlite``) against random-init EfficientNet-B0.

Data and split as ``bench/learning.py`` (whose crop and location machinery this reuses): the shared ENA24
photos (7 species x 3), MegadetectorLite's top box per photo (else the central 80 %), each photo at an
invented location of its own species, named with the seed, so each seed draws another location-grouped
split. Per seed, both backbones train through ``camtrap train BASE``'s own function
(``trainer.pipeline.train_folder``) on the same export with the same recipe; printed: the held-out test
macro-F1 of each, then the mean and the spread (population standard deviation, min-max) over the seeds.
Small data: a few test crops per seed, so read the spread before the mean. Usage::

    .venv/bin/python -m bench.transfer --seeds 3
"""

from __future__ import annotations

import argparse
import csv
import logging
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from backend.config import Settings
from backend.contracts.bundle import read_manifest
from bench.learning import detector_boxes, small_data_config, tasks_for, write_base
from tests.conftest import DEFAULT_IMAGES
from trainer.pipeline import train_folder

logger = logging.getLogger("bench.transfer")

#: (column title, backbone, start from pretrained weights)
CANDIDATES = (
    ("mdlite (MegadetectorLite start)", "mdlite", True),
    ("efficientnet_b0 (random init)", "efficientnet_b0", False),
)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="mdlite backbone vs random-init EfficientNet-B0.", add_help=add_help)
    parser.add_argument("--seeds", type=int, default=3, help="seeds (default: 3)")
    parser.add_argument("--input-size", type=int, default=96, help="network input in pixels (default: 96)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs (default: 12)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: CUDA when available)")
    parser.add_argument("--detector-threshold", type=float, default=0.2, help="MegadetectorLite (default: 0.2)")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES, help=f"photos (default: {DEFAULT_IMAGES})")
    return parser


def one_run(base: Path, root: Path, args: argparse.Namespace, seed: int, backbone: str, pretrained: bool) -> float:
    """Held-out test macro-F1 of one backbone on one seed's export."""
    settings = Settings(data_dir=root / f"data-{backbone}", download_concurrency=2)
    config = small_data_config(
        settings, args, seed, backbone=backbone, imagenet_weights=pretrained, gate_min_test_per_class=1
    )
    outcome = train_folder(base, settings=settings, config=config, job_id=f"transfer-s{seed}-{backbone}")
    start = read_manifest(Path(outcome.bundle)).starting_weights
    if start is None or start.pretrained != pretrained:
        raise SystemExit(f"{backbone} did not start as intended: {start.describe() if start else 'unrecorded'}")
    return outcome.macro_f1


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with open(args.image_dir / "labels.csv", newline="") as handle:
        labels = {row["filepath"]: row["label"] for row in csv.DictReader(handle)}
    boxes = detector_boxes(args.image_dir, sorted(labels), args.detector_threshold)
    species = sorted(set(labels.values()))
    out = sys.stdout
    out.write(
        f"{len(labels)} photos, {len(species)} species, 3 invented locations per species (grouped split); "
        f"{args.input_size} px, {args.epochs} epochs, torch {torch.__version__}\n\n"
    )
    out.write("seed  " + "  ".join(f"{title:>32}" for title, _, _ in CANDIDATES) + "\n")
    scores: dict[str, list[float]] = {title: [] for title, _, _ in CANDIDATES}
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory(prefix="bench-transfer-") as scratch:
            root = Path(scratch)
            base = root / "season"
            write_base(base, tasks_for(labels, boxes, seed, 3), species, args.image_dir)
            row = []
            for title, backbone, pretrained in CANDIDATES:
                # each run gets a fresh logs/ (bundles, served model) so neither is gated against the other
                shutil.rmtree(base / "logs", ignore_errors=True)
                scores[title].append(one_run(base, root, args, seed, backbone, pretrained))
                row.append(scores[title][-1])
        out.write(f"{seed:>4}  " + "  ".join(f"{value:>32.3f}" for value in row) + "\n")
        out.flush()
    out.write("mean  " + "  ".join(f"{statistics.mean(v):>32.3f}" for v in scores.values()) + "\n")
    out.write("std   " + "  ".join(f"{statistics.pstdev(v):>32.3f}" for v in scores.values()) + "\n")
    spread = [f"{min(v):.3f}-{max(v):.3f}" for v in scores.values()]
    out.write("range " + "  ".join(f"{s:>32}" for s in spread) + "\n")
    mdlite, effnet = scores.values()
    gain = statistics.mean(mdlite) - statistics.mean(effnet)
    wins = sum(m > e for m, e in zip(mdlite, effnet, strict=True))
    out.write(
        f"\nmdlite - efficientnet_b0 (random init): mean macro-F1 {gain:+.3f}, "
        f"mdlite ahead on {wins} of {args.seeds} seeds\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
