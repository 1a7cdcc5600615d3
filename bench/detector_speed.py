"""Detector cost: MegadetectorLite (``DETECTOR_MODEL=mdlite``) against an MDv5a-size model, s/photo.

Both detectors are loaded through :class:`backend.vision.detector.Detector` (the service's own path) and run
the same ENA24 photos one at a time (batch 1, what a CPU-only lab pays per photo) with ``--threads`` torch
threads (default 1). The MDv5a-size model is the random-weight YOLOv5x6 at 1280 px with 3 classes that
``tests/model_factory.py`` builds (MDv5a's architecture and input size; its boxes mean nothing, its cost is
MDv5a's). After a warm-up photo each, the two alternate for ``--rounds`` rounds (background load on a
shared machine spreads over both); the median round of each counts, and the ratio is of those medians.

Then MegadetectorLite runs on all 21 shared ENA24 photos, and the photos with an animal box at or above 0.2
(``SHOW_THRESHOLD``'s default) and 0.1 are counted. Usage::

    .venv/bin/python -m bench.detector_speed --images 4 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from backend.config import Settings
from backend.vision.categories import ANIMAL_CATEGORY
from backend.vision.detector import Detector
from bench.predict_throughput import DEFAULT_MODEL, ensure_model
from tests.conftest import DEFAULT_IMAGES

#: The thresholds the photo counts are reported at.
COUNT_THRESHOLDS = (0.2, 0.1)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="MegadetectorLite vs MDv5a-size: s/photo.", add_help=add_help)
    parser.add_argument("--images", type=int, default=4, help="photos timed per round (default: 4)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, median kept (default: 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--device", default="cpu", help="torch device of both detectors (default: cpu)")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES, help=f"photos (default: {DEFAULT_IMAGES})")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"MDv5a-size model ({DEFAULT_MODEL})")
    return parser


def seconds_per_photo(detector: Detector, images: list[Image.Image]) -> float:
    started = time.perf_counter()
    for index, image in enumerate(images):
        detector.detect([image], [str(index)], 0.01)
    if detector.model_name != "mdlite" and torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / len(images)


def photos_with_animal_box(detector: Detector, image_dir: Path) -> tuple[int, dict[float, int]]:
    """How many photos have an animal box at or above each of :data:`COUNT_THRESHOLDS`."""
    names = sorted(p.name for p in image_dir.glob("*.jpg"))
    counts = dict.fromkeys(COUNT_THRESHOLDS, 0)
    for name in names:
        with Image.open(image_dir / name) as image:
            (found,) = detector.detect([image.convert("RGB")], [name], min(COUNT_THRESHOLDS))
        assert not isinstance(found, str), f"{name}: {found}"
        best = max((d.conf for d in found if d.category == ANIMAL_CATEGORY), default=0.0)
        for threshold in COUNT_THRESHOLDS:
            counts[threshold] += best >= threshold
    return len(names), counts


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    ensure_model(args.model)
    common = {"detector_device": args.device, "detector_batch_size": 1}
    mdlite = Detector.load(Settings(detector_model="mdlite", **common))
    md_v5a = Detector.load(Settings(detector_model=str(args.model), **common))
    names = sorted(p.name for p in args.image_dir.glob("*.jpg"))[: args.images + 1]
    images = [Image.open(args.image_dir / name).convert("RGB") for name in names]
    warm, timed = images[:1], images[1:]
    for detector in (mdlite, md_v5a):
        seconds_per_photo(detector, warm)
    rounds: dict[str, list[float]] = {"mdlite": [], "md_v5a": []}
    for _ in range(args.rounds):
        rounds["mdlite"].append(seconds_per_photo(mdlite, timed))
        rounds["md_v5a"].append(seconds_per_photo(md_v5a, timed))
    lite, big = (statistics.median(rounds[k]) for k in ("mdlite", "md_v5a"))
    print(  # noqa: T201
        f"{args.device}, {args.threads} torch thread(s), batch 1, {len(timed)} photos x {args.rounds} rounds (median): "
        f"mdlite {lite:.3f} s/photo, MDv5a-size (YOLOv5x6 1280 px) {big:.3f} s/photo: ratio {big / lite:.1f}x"
    )
    total, counts = photos_with_animal_box(mdlite, args.image_dir)
    print(  # noqa: T201
        "mdlite on the ENA24 photos: "
        + ", ".join(f"{counts[t]} of {total} with an animal box >= {t}" for t in COUNT_THRESHOLDS)
    )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
