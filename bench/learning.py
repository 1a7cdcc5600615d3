"""Learning you can trust, measured: held-out macro-F1, calibration, the gate over two growing rounds, the leak.

Data: the shared ENA24 photos (7 species x 3). Boxes: the offline detector MegadetectorLite's top animal
box where it finds one (``--detector-threshold``), else the central 80 % of the photo (counted). Locations
are invented, deterministically: the 3 photos of each species sit at 3 locations of their own, named
after the species, the photo's rank and the seed (so each seed draws another grouped split).

Per seed, two growing rounds through ``camtrap train BASE``'s own function (``trainer.pipeline.train_folder``,
a Label Studio JSON export written to a scratch folder): round 1 has the first 2 photos of each species,
round 2 all 3 (a new location per species). When the gate rejects the round-1 model, it is promoted by hand
(as a person would), so round 2 is gated against it. Printed per round: crops per split, held-out
macro-F1, expected calibration error before/after calibration, the gate's decision; then the leak: round-2
test photos the round-1 model trained or validated on, for this stable split and for a baseline split
re-drawn at each run (what a split recomputed from scratch does). Usage::

    .venv/bin/python -m bench.learning --seeds 3
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from backend.config import Settings
from backend.contracts import promotion, registry
from backend.contracts.bundle import read_metrics, read_split
from backend.contracts.keys import RedisKeys
from backend.vision.decode import decode_image
from backend.vision.mdlite import MDLiteModel
from backend.vision.mdlite_assets import asset_paths, fetch
from tests.conftest import DEFAULT_IMAGES
from tests.trainer.fake_label_studio import box_annotation, label_config
from trainer.config import TrainConfig
from trainer.crops import Crop
from trainer.folder import FOLDER_PROJECT
from trainer.pipeline import MIN_CALIBRATION_CROPS, train_folder
from trainer.split import Split, split_crops

logger = logging.getLogger("bench.learning")

#: The box given to a photo MegadetectorLite finds no animal in (percent x, y, w, h): its central 80 %.
FALLBACK_BOX = (10.0, 10.0, 80.0, 80.0)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Split, gate and calibration over growing data.", add_help=add_help)
    parser.add_argument("--seeds", type=int, default=3, help="seeds (default: 3)")
    parser.add_argument("--backbone", default="resnet18", help="torchvision backbone (default: resnet18)")
    parser.add_argument("--input-size", type=int, default=96, help="network input in pixels (default: 96)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs per round (default: 12)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: CUDA when available)")
    parser.add_argument(
        "--gate-min-test-per-class",
        type=int,
        default=1,
        help="GATE_MIN_TEST_PER_CLASS for this tiny set (default: 1; the product's default is 5)",
    )
    parser.add_argument("--detector-threshold", type=float, default=0.2, help="MegadetectorLite (default: 0.2)")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES, help=f"photos (default: {DEFAULT_IMAGES})")
    return parser


def detector_boxes(image_dir: Path, names: list[str], threshold: float) -> dict[str, tuple[float, ...] | None]:
    """MegadetectorLite's top animal box of each photo (percent x, y, w, h), or None."""
    try:
        weights, kwargs = asset_paths()
        model = MDLiteModel.load(weights, kwargs)
    except ValueError:
        fetch()
        model = MDLiteModel.load(*asset_paths())
    boxes: dict[str, tuple[float, ...] | None] = {}
    for name in names:
        image = decode_image((image_dir / name).read_bytes(), max_pixels=200_000_000)
        found = model.detect([image], threshold)[0]
        boxes[name] = tuple(100.0 * v for v in found[0][2]) if found else None
    return boxes


def small_data_config(settings: Settings, args: argparse.Namespace, seed: int, **fields: object) -> TrainConfig:
    """The benchmarks' training on a few dozen crops: no early stop, in-process loading, 2 crops make a class."""
    return TrainConfig.from_settings(
        settings,
        input_size=args.input_size,
        epochs=args.epochs,
        patience=args.epochs,
        batch_size=16,
        num_workers=0,
        seed=seed,
        min_examples_per_class=2,
        device=args.device,
        **fields,
    )


def tasks_for(labels: dict[str, str], boxes: dict, seed: int, per_species: int) -> list[dict]:
    """The export: the first ``per_species`` photos of each species, each at its own invented location."""
    by_species: dict[str, list[str]] = defaultdict(list)
    for name, species in sorted(labels.items()):
        by_species[species].append(name)
    tasks = []
    for species, names in sorted(by_species.items()):
        for rank, name in enumerate(names[:per_species]):
            task_id = int(Path(name).stem)
            box = boxes[name] or FALLBACK_BOX
            tasks.append(
                {
                    "id": task_id,
                    "data": {"image": f"/data/upload/1/{name}", "location": f"{species} site {rank} seed {seed}"},
                    "annotations": [box_annotation(100_000 + task_id, species, box)],
                }
            )
    return tasks


def write_base(base: Path, tasks: list[dict], species: list[str], image_dir: Path) -> None:
    (base / "images").mkdir(parents=True, exist_ok=True)
    for task in tasks:
        name = Path(task["data"]["image"]).name
        link = base / "images" / name
        if not link.exists():
            link.symlink_to(image_dir / name)
    (base / "label_studio.json").write_text(json.dumps(tasks))
    (base / "label_config.xml").write_text(label_config(species))


def redrawn_leak(tasks_1: list[dict], tasks_2: list[dict]) -> int:
    """Round-2 test photos the round-1 model saw, when each run re-draws its split (a salt per run)."""

    def photos(tasks: list[dict], salt: str) -> dict[Split, set[str]]:
        crops = [
            Crop(Path(f"{t['id']}.png"), "x", t["id"], t["data"]["location"], "human", t["data"]["image"])
            for t in tasks
        ]
        result = split_crops(crops, project=salt, val_fraction=0.15, test_fraction=0.2, sequence_gap_s=60)
        return {s: {c.photo for c in members} for s, members in result.splits.items()}

    first, second = photos(tasks_1, "run-1"), photos(tasks_2, "run-2")
    return len(second[Split.TEST] & (first[Split.TRAIN] | first[Split.VAL]))


def one_round(base: Path, settings: Settings, config: TrainConfig, job_id: str) -> dict:
    outcome = train_folder(base, settings=settings, config=config, job_id=job_id)
    bundle = Path(outcome.bundle)
    metrics = read_metrics(bundle)
    return {
        "outcome": outcome,
        "split": read_split(bundle) or {},
        "counts": {s: sum(v.values()) for s, v in metrics["split"]["counts"].items()},
        "calibration": metrics["calibration"],
        "gate": metrics["gate"],
    }


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with open(args.image_dir / "labels.csv", newline="") as handle:
        labels = {row["filepath"]: row["label"] for row in csv.DictReader(handle)}
    boxes = detector_boxes(args.image_dir, sorted(labels), args.detector_threshold)
    found = sum(1 for b in boxes.values() if b is not None)
    out = sys.stdout
    out.write(f"{len(labels)} photos, {len(set(labels.values()))} species; MegadetectorLite boxes on {found}, ")
    out.write(f"central-80% box on {len(labels) - found}; 3 invented locations per species\n")
    out.write(
        f"{args.backbone} {args.input_size} px, {args.epochs} epochs, no pretrained weights; "
        f"GATE_MIN_TEST_PER_CLASS {args.gate_min_test_per_class}\n\n"
    )
    out.write("seed round  train/val/test crops  test macro-F1  ECE before -> after  gate\n")
    f1: list[float] = []
    ece: list[tuple[float, float]] = []
    leaks, baseline_leaks, excluded = [], [], []
    fitted = 0
    scored_leaks: list[int] = []
    species = sorted(set(labels.values()))
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory(prefix="bench-learning-") as scratch:
            root = Path(scratch)
            settings = Settings(data_dir=root / "data", download_concurrency=2)
            config = small_data_config(
                settings, args, seed, backbone=args.backbone, gate_min_test_per_class=args.gate_min_test_per_class
            )
            base = root / "season"
            rounds = []
            tasks = {}
            for number, per_species in ((1, 2), (2, 3)):
                tasks[number] = tasks_for(labels, boxes, seed, per_species)
                write_base(base, tasks[number], species, args.image_dir)
                result = one_round(base, settings, config, f"bench-s{seed}-r{number}")
                rounds.append(result)
                outcome = result["outcome"]
                cal = result["calibration"]
                c = result["counts"]
                decision = outcome.status
                if number == 1 and outcome.status == "rejected":
                    models = base / "logs" / "models"
                    promotion.set_current(models, FOLDER_PROJECT, outcome.version, None, RedisKeys("bench:"))
                    decision += " (promoted by hand for round 2)"
                before, after = cal["ece_before"], cal["ece_after"]
                ece_text = f"{before:.3f} -> {after:.3f}" if "skipped" not in cal else f"{before:.3f} (val too small)"
                out.write(
                    f"{seed:>4} {number:>5}  {c['train']:>5}/{c['val']:>3}/{c['test']:>3}"
                    f"{'':>10}{outcome.macro_f1:.3f}  {ece_text:>19}  {decision}: {outcome.reason}\n"
                )
                f1.append(outcome.macro_f1)
                ece.append((before, after))
                fitted += "skipped" not in cal
            first, second = rounds[0]["split"], rounds[1]["split"]
            seen = {p for p, s in first["photos"].items() if {"train", "val"} & set(s)}
            tested = {p for p, s in second["photos"].items() if "test" in s}
            leaks.append(len(seen & tested))
            baseline_leaks.append(redrawn_leak(tasks[1], tasks[2]))
            excluded.append(rounds[1]["gate"].get("excluded_seen_by_served", 0))
            scored_leaks.append(len(seen & set(rounds[1]["gate"].get("compared_photos", []))))
            assert registry.read_current(base / "logs" / "models", FOLDER_PROJECT) is not None
    out.write("\n")
    out.write(f"held-out macro-F1 over {len(f1)} runs: median {statistics.median(f1):.3f}, ")
    out.write(f"min {min(f1):.3f}, max {max(f1):.3f}\n")
    out.write(
        f"expected calibration error (test): median {statistics.median(b for b, _ in ece):.3f} raw -> "
        f"{statistics.median(a for _, a in ece):.3f} served (calibration fitted in {fitted} of {len(ece)} runs: "
        f"it needs {MIN_CALIBRATION_CROPS} validation crops)\n"
    )
    out.write(
        f"round-2 test photos the round-1 model trained or validated on: {sum(leaks)} with this split "
        f"(units moved so every species trains), {sum(baseline_leaks)} with a split re-drawn each run; "
        f"crops the gate left out as seen by the served model: {sum(excluded)}; leak (test crops the gate scored "
        f"that the served model trained or validated on): {sum(scored_leaks)}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
