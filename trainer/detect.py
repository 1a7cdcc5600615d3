"""``camtrap detect SOURCE... -o results.json``: MegaDetector over folders and files, as ``run_detector_batch`` does.

Folders are walked recursively (image extensions only), files are taken as given; ``file`` in the
output is the path relative to the sources' common folder, with forward slashes. Images go through
the same :class:`~backend.vision.pipeline.Pipeline` as ``/predict`` (decode on a thread pool, batched
forward passes on ``DETECTOR_DEVICE``), so results are read from and written to the detection store
under ``DATA_DIR``: a second run over the same photos does not run the detector.

Every ``--checkpoint-every N`` images the results so far are written atomically to
``<output>.checkpoint.json`` beside the output (MegaDetector's checkpoint shape,
``{"checkpoint": [images entries]}``); ``--resume`` skips the images it lists, so a killed run loses
at most N images of work. Unreadable files become ``failure`` entries. The output is MegaDetector's
batch format (``backend.formats.megadetector``), checked by ``validate_batch_results`` in the tests;
the checkpoint is deleted once the output is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from backend.commands import Command
from backend.config import Settings, get_settings
from backend.contracts.detection_store import DetectionStore
from backend.errors import ImageError
from backend.formats.atomic import write_json_atomically
from backend.formats.megadetector import md_image, md_output
from backend.vision.pipeline import ImageSource, Pipeline
from backend.vision.thresholds import Thresholds

logger = logging.getLogger(__name__)

#: File name endings treated as images when walking a folder (as ``megadetector.utils.path_utils``).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp")
#: Images handed to the pipeline at once, in detector batches (bounds the decoded pixels held in memory).
BATCHES_PER_STEP = 4


class DetectInputError(ValueError):
    """A SOURCE that does not exist, or a checkpoint that cannot be resumed."""


def find_images(sources: Sequence[Path]) -> tuple[Path, list[Path]]:
    """The common base folder and every image under ``sources`` (folders recursively), sorted, no duplicates.

    Raises:
        DetectInputError: a source does not exist.
    """
    found: set[Path] = set()
    for source in sources:
        source = source.resolve()
        if source.is_dir():
            found.update(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif source.is_file():
            found.add(source)
        else:
            raise DetectInputError(f"{source} does not exist: give image files or folders")
    bases = [s.resolve() if s.resolve().is_dir() else s.resolve().parent for s in sources]
    base = Path(os.path.commonpath(bases))
    return base, sorted(found)


def checkpoint_path(output: Path) -> Path:
    """Where ``--checkpoint-every`` writes, beside the output."""
    return output.with_name(output.name + ".checkpoint.json")


def read_checkpoint(path: Path) -> list[dict]:
    """The images entries of a checkpoint file.

    Raises:
        DetectInputError: the file is not a checkpoint.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        entries = raw["checkpoint"]
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "file" in e for e in entries):
            raise ValueError("'checkpoint' is not a list of images entries")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DetectInputError(f"cannot resume from {path}: {exc}") from exc
    return entries


def _reader(path: Path) -> ImageSource:
    def read() -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from exc

    return read


def _steps(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_detection(
    sources: Sequence[Path],
    output: Path,
    *,
    settings: Settings,
    threshold: float | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    progress: bool = True,
    pipeline: Pipeline | None = None,
) -> dict:
    """Detect on every image of ``sources`` and write the MegaDetector batch file ``output``; returns it.

    Raises:
        DetectInputError: a source is missing, or ``resume`` with an unreadable checkpoint.
    """
    from tqdm import tqdm

    base, images = find_images(sources)
    checkpoint = checkpoint_path(output)
    done: list[dict] = read_checkpoint(checkpoint) if resume and checkpoint.is_file() else []
    seen = {entry["file"] for entry in done}
    relative = {path: path.relative_to(base).as_posix() for path in images}
    todo = [path for path in images if relative[path] not in seen]
    if done:
        logger.info("resuming from %s: %d images done, %d to go", checkpoint, len(done), len(todo))
    thresholds = Thresholds.from_settings(settings)
    if threshold is not None:
        thresholds = replace(thresholds, detection=threshold).ordered()
    own = pipeline is None
    if pipeline is None:
        from backend.vision.detector import Detector

        pipeline = Pipeline(
            Detector.load(settings),
            fetch_threads=settings.download_concurrency,
            max_pixels=settings.max_image_pixels,
            store=DetectionStore.under(settings.data_dir),
        )
    last_checkpoint = len(done)
    try:
        with tqdm(total=len(images), initial=len(done), unit="img", disable=not progress, file=sys.stderr) as bar:
            step_size = pipeline.detector.batch_size * BATCHES_PER_STEP
            if checkpoint_every > 0:  # never more than N images between two checkpoints
                step_size = min(step_size, checkpoint_every)
            for step in _steps(todo, step_size):
                names = [relative[path] for path in step]
                results = pipeline.run(names, [_reader(path) for path in step], None, thresholds)
                done += [md_image(r.name, r.boxes, [], r.failure) for r in results]
                bar.update(len(step))
                if checkpoint_every > 0 and len(done) - last_checkpoint >= checkpoint_every:
                    write_json_atomically(checkpoint, {"checkpoint": done}, indent=None)
                    last_checkpoint = len(done)
    finally:
        if own:
            pipeline.close()
    document = md_output(sorted(done, key=lambda e: e["file"]), settings.detector_model, [], pipeline.detector.id)
    write_json_atomically(output, document)
    checkpoint.unlink(missing_ok=True)
    return document


DETECT_HELP = """Run MegaDetector over folders (recursively) and image files; write MegaDetector's batch format.

  camtrap detect /photos/season1 -o season1.json --checkpoint-every 500
  camtrap detect /photos/season1 -o season1.json --checkpoint-every 500 --resume   # after a kill

Paths in the output are relative to the sources' common folder. Results also go to the detection store
under DATA_DIR, so /predict, pre-annotation and training reuse them.
"""


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", type=Path, metavar="SOURCE", help="image files or folders")
    parser.add_argument("-o", "--output", type=Path, required=True, help="MegaDetector results file to write")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        help="write <output>.checkpoint.json every N images (0: never)",
    )
    parser.add_argument("--resume", action="store_true", help="skip the images of an existing checkpoint")
    parser.add_argument(
        "--threshold", type=float, default=None, help="lowest confidence kept (default DETECTION_THRESHOLD)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_detect_command(args: argparse.Namespace) -> int:
    """``camtrap detect``: 1 with the error's sentence for a missing source or a bad checkpoint."""
    if args.checkpoint_every < 0:
        logger.error("--checkpoint-every must be 0 (off) or a positive number of images")
        return 2
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        logger.error("--threshold must be between 0 and 1")
        return 2
    try:
        document = run_detection(
            args.sources,
            args.output,
            settings=get_settings(),
            threshold=args.threshold,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            progress=not args.no_progress,
        )
    except DetectInputError as exc:
        logger.error("%s", exc)
        return 1
    failed = sum(1 for image in document["images"] if image.get("failure"))
    sys.stdout.write(f"{args.output}: {len(document['images'])} images, {failed} failed\n")
    return 0


COMMANDS = [
    Command(
        "detect",
        "run MegaDetector over folders and files into a MegaDetector results file",
        add_detect_arguments,
        run_detect_command,
        description=DETECT_HELP,
    )
]
