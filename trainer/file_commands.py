"""The commands of users who arrive with files: ``camtrap crops``, ``classify``, ``import-coco``, ``export``.

Only flags, help texts and exit codes live here (this module imports nothing heavy, so ``camtrap --help``
stays fast); the work is done by :mod:`trainer.md_crops`, :mod:`trainer.classify`,
:mod:`trainer.import_coco` and :mod:`trainer.project_export`. Every command exits non-zero with one
sentence (the file, the line or entry, what was expected) on bad input, and writes nothing half-way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from backend.commands import Command
from backend.config import Settings, get_settings
from backend.errors import BackendError
from trainer.errors import TrainerError

if TYPE_CHECKING:
    from backend.formats.coco import CocoDataset
    from backend.formats.label_spec import LabelSpec
    from trainer.import_coco import ImportReport

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


IMPORT_COCO_HELP = """Import a COCO Camera Traps file (Animl's COCO export, a LILA dataset) as training data.

With -o BASE it writes BASE/crops/ and BASE/labels.csv (path,label,location), ready for camtrap train BASE:
a crop per annotation box (absolute pixels, as Animl writes them), MegaDetector's top animal box
(DETECTOR_MODEL) for an image labelled without a box. Empty images are counted and left out, or kept as
the class "empty" with --keep-empty. Missing images are listed, not fatal. Categories are matched by name.

With --project N it creates one Label Studio task per image with its labels as an annotation (boxes and
per-region species, or the image-level species), so training can start at once. The images are referred
to as --image-url + their path under --document-root: by default /data/local-files/?d=<path>, which
Label Studio serves when the folder is under a Local files storage of the project.

--label-spec FILE translates the labels first (MegaDetector's or TrapTagger's label_spec.json).

Examples:
  camtrap import-coco animl_coco.json --images ./photos -o ./season --label-spec label_spec.json
  camtrap train ./season
  camtrap import-coco animl_coco.json --images /data/photos --document-root /data --project 7
"""


def add_import_coco_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("coco", type=Path, metavar="CCT_JSON", help="a COCO Camera Traps file")
    parser.add_argument("--images", type=Path, required=True, help="folder the images' file_name paths start from")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-o", "--output", type=Path, metavar="BASE", help="the training folder to write")
    target.add_argument("--project", help="a Label Studio project id to create labelled tasks in")
    parser.add_argument("--label-spec", type=Path, help="label_spec.json translating the file's labels")
    parser.add_argument("--keep-empty", action="store_true", help="keep empty images as the class 'empty'")
    parser.add_argument(
        "--image-url",
        default="/data/local-files/?d=",
        help="with --project: prefix of the image references (default: /data/local-files/?d=)",
    )
    parser.add_argument(
        "--document-root",
        type=Path,
        help="with --project: the image references are paths relative to this folder (default: --images)",
    )


def run_import_coco(args: argparse.Namespace) -> int:
    """Import; 1 on a malformed file, an unknown label, a used folder or a Label Studio error."""
    from backend.formats.coco import read_coco
    from backend.formats.label_spec import read_label_spec

    settings = get_settings()
    if not args.images.is_dir():
        logger.error(
            "--images %s is not a folder: give the folder the COCO file's file_name paths start from", args.images
        )
        return 1
    try:
        dataset = read_coco(args.coco)
        spec = read_label_spec(args.label_spec) if args.label_spec else None
        # megadetector prints while it loads the detector: stdout carries only the summary
        with contextlib.redirect_stdout(sys.stderr):
            report = _import(args, settings, dataset, spec)
    except EXPECTED_ERRORS as exc:
        logger.error("%s", exc)
        return 1
    sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    for name in report.images_missing[:20]:
        logger.warning("missing under %s: %s", args.images, name)
    if report.images_missing:
        logger.warning("%d image(s) of %s are missing under %s", len(report.images_missing), args.coco, args.images)
    return 0


def _import(args: argparse.Namespace, settings: Settings, dataset: CocoDataset, spec: LabelSpec | None) -> ImportReport:
    from trainer import import_coco

    if args.output is not None:
        from trainer.pipeline import detector_top_box

        return import_coco.import_to_folder(
            dataset,
            args.images,
            args.output,
            spec=spec,
            keep_empty=args.keep_empty,
            max_pixels=settings.max_image_pixels,
            top_box=None,
            load_top_box=lambda: detector_top_box(settings),
            detector_name=Path(settings.detector_model).name,
        )
    return _import_to_project(args, settings, dataset, spec)


def _import_to_project(
    args: argparse.Namespace, settings: Settings, dataset: CocoDataset, spec: LabelSpec | None
) -> ImportReport:
    from backend.labelstudio.client import LabelStudioClient
    from trainer import import_coco

    plans, report = import_coco.plan_images(dataset, spec=spec, keep_empty=args.keep_empty)
    with LabelStudioClient(settings) as client:
        mapping = import_coco.read_project_mapping(client, args.project)
        tasks = import_coco.project_tasks(
            dataset,
            plans,
            mapping,
            images_dir=args.images,
            image_url=args.image_url,
            document_root=args.document_root or args.images,
            report=report,
        )
        if not tasks:
            raise TrainerError(f"{args.coco}: no labelled image to import (see the counts above)")
        import_coco.import_to_project(client, args.project, tasks, report)
    return report


EXPORT_HELP = """Export a Label Studio project's labels to a file: the human annotations (the one training uses
per task) and the latest stored prediction of the model, each row or annotation marked source=human or
source=model (with its model_version and score).

  csv    task_id,image,location,datetime,source,label,x,y,width,height,score,model_version,annotation_id
  coco   COCO Camera Traps (categories by name, empty = 0; source/score/model_version on each annotation)
  md     MegaDetector batch format (Timelapse, AddaxAI): the latest prediction's boxes and species
         (classifications); human boxes with conf 1.0 and "source": "human"
  camtrapdp  a Camtrap DP 1.0 package folder (datapackage.json, deployments.csv, media.csv,
         observations.csv; classificationMethod human/machine), validated with frictionless against the
         vendored profile before it is written; a location's coordinates come from its tasks' data
         (latitude, longitude) or --locations, photo times from EXIF under --images-root, else the data

Examples:
  camtrap export --project 7 --format coco -o season_coco.json
  camtrap export --project 7 --format camtrapdp -o season_dp --locations sites.csv --images-root /data/photos
"""


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", required=True, help="the Label Studio project id")
    parser.add_argument("--format", required=True, choices=["csv", "coco", "md", "camtrapdp"], help="the file format")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="PATH", help="the file (folder) written")
    parser.add_argument(
        "--locations", type=Path, metavar="CSV", help="camtrapdp: location,latitude,longitude[,coordinateUncertainty]"
    )
    parser.add_argument("--images-root", type=Path, metavar="DIR", help="camtrapdp: the photos, for EXIF times")


def run_export(args: argparse.Namespace) -> int:
    """Export; 1 when Label Studio cannot be read."""
    from backend.labelstudio.client import LabelStudioClient
    from trainer import project_export

    settings = get_settings()
    try:
        with LabelStudioClient(settings) as client:
            tasks, config = project_export.fetch_project(client, args.project)
    except (BackendError, ValueError) as exc:
        logger.error("cannot export project %s from Label Studio: %s", args.project, exc)
        return 1
    if args.format == "md":
        path = project_export.write_md_export(args.output, tasks, config, settings.detector_model)
        sys.stdout.write(json.dumps({"output": str(path), "tasks": len(tasks)}) + "\n")
        return 0
    media, found = project_export.observations(tasks, config, location_fields=settings.location_fields)
    if args.format == "camtrapdp":
        try:
            path = project_export.write_camtrapdp_export(
                args.output,
                tasks,
                media,
                found,
                project=args.project,
                images_root=args.images_root,
                locations=args.locations,
            )
        except EXPECTED_ERRORS as exc:
            logger.error("%s", exc)
            return 1
    else:
        path = project_export.write_export(args.format, args.output, media, found, project=args.project)
    counts = {source: sum(1 for o in found if o.source == source) for source in ("human", "model")}
    sys.stdout.write(json.dumps({"output": str(path), "images": len(media), "observations": counts}) + "\n")
    return 0


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
    Command(
        "import-coco",
        "import a COCO Camera Traps file (Animl, LILA) as a training folder or as labelled Label Studio tasks",
        add_import_coco_arguments,
        run_import_coco,
        description=IMPORT_COCO_HELP,
    ),
    Command(
        "export",
        "export a Label Studio project's human labels and model predictions as CSV, COCO Camera Traps, MegaDetector "
        "batch JSON or a Camtrap DP package",
        add_export_arguments,
        run_export,
        description=EXPORT_HELP,
    ),
]
