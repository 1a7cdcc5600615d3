"""The commands of users who arrive with files: ``camtrap crops``, ``classify``, ``import-coco``, ``export``.

Only flags, help texts and exit codes live here (this module imports nothing heavy, so ``camtrap --help``
stays fast); the work is done by :mod:`trainer.md_crops`, :mod:`trainer.classify`,
:mod:`trainer.import_coco` and :mod:`trainer.project_export`. Every command exits non-zero with one
sentence (the file, the line or entry, what was expected) on bad input, and writes nothing half-way.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from backend.commands import Command
from backend.config import get_settings
from backend.errors import BackendError
from trainer.errors import TrainerError

logger = logging.getLogger(__name__)

#: ``camtrap crops --threshold``'s default: MegaDetector's ``create_crop_folder`` and CLASSIFY_THRESHOLD.
DEFAULT_CROP_THRESHOLD = 0.1
#: ``camtrap classify -o``'s default, the recipe's file name.
RESULTS_FILE = "model_results.csv"


CROPS_HELP = """Cut square crops of the animal detections in a MegaDetector results file, named and cut as
MegaDetector's classification pipeline does (crop_detections.py --square-crops):

  CROPS/<images[].file>___crop<NN>_<info.detector>.jpg

NN is the detection's index in the image's list. Only animal boxes at or above --threshold are cut; crops
already there are kept (run it again to resume). Images that cannot be read are listed at the end, not
fatal. The summary (counts, failed images) is printed as JSON.

Example:
  camtrap crops photos/detections.json -o season/crops --images-root photos --threshold 0.2
"""


def add_crops_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", type=Path, metavar="RESULTS_JSON", help="a MegaDetector batch results file")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="CROPS", help="the crops folder")
    parser.add_argument(
        "--images-root",
        type=Path,
        help="folder the relative images[].file paths start from (default: the results file's folder)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_CROP_THRESHOLD,
        help=f"lowest detection confidence cropped (default: {DEFAULT_CROP_THRESHOLD})",
    )


def run_crops(args: argparse.Namespace) -> int:
    """Crop, print the summary as JSON; 1 when the file is not a results file or no image could be read."""
    from trainer.md_crops import crop_detections, read_md_results

    settings = get_settings()
    if not 0.0 <= args.threshold <= 1.0:
        logger.error("--threshold must be between 0 and 1, got %s", args.threshold)
        return 2
    try:
        results = read_md_results(args.results)
    except BackendError as exc:
        logger.error("%s", exc)
        return 1
    images_root = args.images_root or args.results.resolve().parent
    if not images_root.is_dir():
        logger.error("--images-root %s is not a folder: give the folder the photos are in", images_root)
        return 1
    report = crop_detections(
        results,
        args.output,
        images_root,
        threshold=args.threshold,
        max_pixels=settings.max_image_pixels,
        threads=settings.download_concurrency,
    )
    sys.stdout.write(json.dumps(asdict(report), indent=2) + "\n")
    if report.images_failed and not (report.crops_written or report.crops_existing):
        logger.error(
            "none of the %d images with animal boxes could be read (first: %s); check --images-root",
            len(report.images_failed),
            report.images_failed[0]["reason"],
        )
        return 1
    if report.images_failed:
        logger.warning("%d image(s) could not be read and were skipped (listed above)", len(report.images_failed))
    return 0


CLASSIFY_HELP = """Classify every crop under CROPS with a trained model and write one CSV row per crop:
path (relative to CROPS), label and score (top-1), then one probability column per class.

MODEL is the TorchScript logs/model.pt that camtrap train writes, a bundle folder
(logs/models/folder/<version>), or any TorchScript classifier MegaDetector's run_classifier.py takes
(with label_index.json or label_correspondance.json beside it). CUDA is used when present.

Example:
  camtrap classify season/logs/model.pt season/crops -o season/logs/model_results.csv
"""


def add_classify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, metavar="MODEL", help="a TorchScript model.pt or a bundle folder")
    parser.add_argument("crops", type=Path, metavar="CROPS", help="the crops folder (searched recursively)")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path(RESULTS_FILE), help=f"the CSV written (default: ./{RESULTS_FILE})"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="crops per forward pass (default: 64)")
    parser.add_argument("--workers", type=int, default=0, help="crop-reading processes (default: 0, this one)")
    parser.add_argument("--device", help="cuda or cpu (default: CUDA when available)")


def run_classify(args: argparse.Namespace) -> int:
    """Classify; 1 when the model cannot be loaded, CROPS holds no crop, or no crop could be read."""
    from backend.vision.device import resolve_device
    from trainer.classify import CROP_SUFFIXES, classify_folder, list_crops, load_model

    settings = get_settings()
    if not args.crops.is_dir():
        logger.error("%s is not a folder: give the crops folder", args.crops)
        return 1
    device = resolve_device(args.device)
    try:
        model = load_model(args.model, device)
    except (ValueError, BackendError) as exc:
        logger.error("%s", exc)
        return 1
    if not list_crops(args.crops):
        logger.error("%s holds no crop (files ending %s)", args.crops, ", ".join(sorted(CROP_SUFFIXES)))
        return 1
    rows, failed = classify_folder(
        model,
        args.crops,
        args.output,
        batch_size=max(1, args.batch_size),
        workers=max(0, args.workers),
        max_pixels=settings.max_image_pixels,
    )
    if rows == 0:
        args.output.unlink(missing_ok=True)
        logger.error("none of the %d crops could be read (first: %s: %s)", len(failed), *failed[0])
        return 1
    logger.info(
        "%s: %d crops classified with %s on %s (%d unreadable)", args.output, rows, model.source, device, len(failed)
    )
    return 0


def _fail(exc: Exception) -> int:
    logger.error("%s", exc)
    return 1


#: Errors every command reports as one sentence and exit status 1.
EXPECTED_ERRORS = (BackendError, TrainerError)


COMMANDS: Sequence[Command] = [
    Command(
        "crops",
        "cut square crops of a MegaDetector results file's animal boxes, named as MegaDetector's pipeline names them",
        add_crops_arguments,
        run_crops,
        description=CROPS_HELP,
    ),
    Command(
        "classify",
        "classify a folder of crops with a trained model into model_results.csv",
        add_classify_arguments,
        run_classify,
        description=CLASSIFY_HELP,
    ),
]
