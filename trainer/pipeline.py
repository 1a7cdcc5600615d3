"""One training run from Label Studio to a served (or rejected) bundle: the function the job and the CLI call.

Reads in run order; each step reports its stage (``trainer.progress.Stage``) before it starts:
exporting -> downloading -> cropping -> splitting -> training -> evaluating -> publishing -> done.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from backend.config import Settings
from backend.contracts import registry
from backend.contracts.bundle import BundleManifest, Preprocessing, bundle_dir, new_version
from backend.contracts.keys import RedisKeys
from backend.contracts.setup_record import SetupRecord
from backend.formats.label_spec import LabelSpec
from backend.labelstudio.client import LabelStudioClient
from backend.vision.categories import ANIMAL_CATEGORY
from trainer.card import render_card
from trainer.config import TrainConfig
from trainer.crops import Crop, CropSet, Fetch, TopBox, build_crops, download_images
from trainer.errors import EmptyDatasetError
from trainer.evaluate import Evaluation, evaluate_network, evaluate_served, plot_confusion
from trainer.export import ExportedProject, export_project
from trainer.label_translation import spec_for_project
from trainer.progress import Progress, Stage
from trainer.publish import BundleFiles, GateDecision, decide, publish
from trainer.split import Split, SplitResult, apply_min_examples, split_crops
from trainer.train import EpochStats, FitResult, fit

logger = logging.getLogger(__name__)

#: A run needs at least this many species after the rare ones are dropped.
MIN_SPECIES = 2


@dataclass(frozen=True)
class TrainOutcome:
    """What a run produced; ``to_dict`` is the RQ job's result."""

    project: str
    version: str
    status: str
    reason: str
    top1: float
    macro_f1: float
    served_version: str | None
    served_macro_f1: float | None
    bundle: str

    def to_dict(self) -> dict:
        return asdict(self)


def run_training(
    project: str,
    *,
    settings: Settings,
    config: TrainConfig,
    job_id: str,
    connection: redis.Redis | None,
    progress: Progress | None = None,
    client: LabelStudioClient | None = None,
    top_box: TopBox | None = None,
) -> TrainOutcome:
    """Export, crop, split, train, evaluate, publish and gate one project's classifier.

    Args:
        project: Label Studio project id.
        settings: Paths, Label Studio access and limits.
        config: Hyper-parameters and data rules.
        job_id: Names the run directory and the bundle's staging directory.
        connection: Redis, for the stored /setup data and the promotion announcement (None: file only).
        progress: Where progress goes (default: the log only).
        client: A Label Studio client (default: built from the settings and the project's /setup data).
        top_box: Top MegaDetector animal box finder for image-level labels (default: load DETECTOR_MODEL
            when such a task exists).

    Raises:
        ExportError: Label Studio could not be read.
        EmptyDatasetError: not enough labelled crops or species.
    """
    progress = progress or Progress()
    keys = RedisKeys(settings.redis_prefix)
    run_dir = _fresh_dir(settings.runs_dir / job_id)
    own_client = client is None
    client = client or make_client(settings, connection, keys, project)
    try:
        exported = _export(project, client, config, progress, spec_for_project(settings, connection, keys, project))
        crops = _crops(exported, client.fetch_image, settings, config, run_dir, progress, top_box)
    finally:
        if own_client:
            client.close()
    return learn_and_publish(
        exported,
        crops,
        project=project,
        models_dir=settings.models_dir,
        config=config,
        job_id=job_id,
        run_dir=run_dir,
        connection=connection,
        keys=keys,
        progress=progress,
    )


def train_folder(
    base: Path,
    *,
    settings: Settings,
    config: TrainConfig,
    job_id: str,
    progress: Progress | None = None,
    top_box: TopBox | None = None,
    logs: Path | None = None,
) -> TrainOutcome:
    """``camtrap train BASE``: the same training as a Label Studio project, from files alone.

    The data is read by :func:`trainer.folder.read_folder` (a Label Studio JSON export, or a crops
    folder with a Label Studio CSV export or a ``labels.csv``); everything after that is the very code
    a training job runs. Bundles, the pointer and the gate live under ``BASE/logs/models/`` (project
    :data:`~trainer.folder.FOLDER_PROJECT`), so a second run is gated against the first; the files
    users of the recipe expect (:func:`trainer.folder.write_recipe_files`) are written to ``BASE/logs/``, or
    to ``logs`` when given (the recipe's scripts write to ``./logs`` of the caller).

    Raises:
        FolderLayoutError: ``BASE`` is not one of the layouts, or a file in it is malformed.
        EmptyDatasetError: not enough labelled crops or species.
    """
    from trainer.folder import FOLDER_PROJECT, read_folder, write_recipe_files

    progress = progress or Progress()
    logs = logs or base / "logs"
    run_dir = _fresh_dir(logs / "runs" / job_id)
    progress.stage(Stage.EXPORTING, detail=f"reading {base}")
    dataset = read_folder(base, location_fields=config.location_fields)
    progress.update(counts=dataset.exported.counts(), layout=dataset.layout)
    crops = _crops(dataset.exported, dataset.fetch, settings, config, run_dir, progress, top_box)
    outcome = learn_and_publish(
        dataset.exported,
        crops,
        project=FOLDER_PROJECT,
        models_dir=logs / "models",
        config=config,
        job_id=job_id,
        run_dir=run_dir,
        connection=None,
        keys=RedisKeys(settings.redis_prefix),
        progress=progress,
    )
    write_recipe_files(Path(outcome.bundle), logs)
    shutil.rmtree(run_dir, ignore_errors=True)
    return outcome


def learn_and_publish(
    exported: ExportedProject,
    crops: CropSet,
    *,
    project: str,
    models_dir: Path,
    config: TrainConfig,
    job_id: str,
    run_dir: Path,
    connection: redis.Redis | None,
    keys: RedisKeys,
    progress: Progress,
) -> TrainOutcome:
    """Split, train, evaluate (new and served model), write the bundle, gate it: the core of every run.

    Args:
        exported: The labelled tasks (from Label Studio or from a folder).
        crops: Their crops, written under ``run_dir``.
        project: The bundle's project (the pointer and the served model it is gated against).
        models_dir: Where bundles and pointers live (``DATA_DIR/models``, or ``BASE/logs/models``).
        config: Hyper-parameters and data rules.
        job_id: Names the bundle's staging directory.
        run_dir: The run's scratch directory (TensorBoard files, the confusion matrix).
        connection: Redis, for the promotion announcement (None: the pointer file only).
        keys: Redis key names.
        progress: Where progress goes.
    """
    split, rare = _split(crops, config, progress)
    fitted = _train(split, config, run_dir, progress)
    served_version = registry.read_current(models_dir, project)
    test, served, note = _evaluate(fitted, split, config, models_dir, project, served_version, run_dir, progress)

    progress.stage(Stage.PUBLISHING)
    decision = decide(
        test.macro_f1,
        served_version,
        served.macro_f1 if served else None,
        min_gain=config.promotion_min_gain,
        note=note,
    )
    metrics = _metrics(exported, crops, rare, split, fitted, test, served, served_version, note, decision, config)
    manifest = BundleManifest(
        version=new_version(project),
        project=project,
        labels=split.labels,
        preprocessing=_preprocessing(config),
        backbone=config.backbone,
        parent_version=served_version,
        job_id=job_id,
        status=decision.status,
        status_reason=decision.reason,
        metrics=_headline(test, served),
    )
    files = BundleFiles(
        fitted.state_dict,
        metrics,
        render_card(manifest, metrics),
        run_dir / "confusion_matrix.png",
        run_dir / "tensorboard",
    )
    path = publish(models_dir, manifest, files, connection=connection, keys=keys)
    outcome = TrainOutcome(
        project,
        manifest.version,
        decision.status.value,
        decision.reason,
        test.top1,
        test.macro_f1,
        served_version,
        served.macro_f1 if served else None,
        str(path),
    )
    progress.stage(
        Stage.DONE, detail=f"{manifest.version} {decision.status.value}: {decision.reason}", result=outcome.to_dict()
    )
    shutil.rmtree(run_dir / "crops", ignore_errors=True)
    return outcome


def make_client(settings: Settings, connection: redis.Redis | None, keys: RedisKeys, project: str) -> LabelStudioClient:
    """A Label Studio client from the settings, falling back to the URL the project's /setup stored."""
    record = None
    if connection is not None:
        try:
            record = SetupRecord.load(connection, keys, project)
        except redis.RedisError as exc:
            logger.warning("cannot read the stored /setup data of project %s: %s", project, exc)
    return LabelStudioClient(settings, url=settings.label_studio_url or (record.hostname if record else None))


def _export(
    project: str, client: LabelStudioClient, config: TrainConfig, progress: Progress, label_spec: LabelSpec | None
) -> ExportedProject:
    progress.stage(Stage.EXPORTING, detail=f"reading project {project} from Label Studio at {client.base_url}")
    exported = export_project(
        client,
        project,
        location_fields=config.location_fields,
        base_url=client.base_url or "(LABEL_STUDIO_URL unset)",
        label_spec=label_spec,
    )
    progress.update(counts=exported.counts())
    return exported


def _crops(
    exported: ExportedProject,
    fetch: Fetch,
    settings: Settings,
    config: TrainConfig,
    run_dir: Path,
    progress: Progress,
    top_box: TopBox | None,
) -> CropSet:
    tasks = exported.tasks
    progress.stage(Stage.DOWNLOADING, total=len(tasks), done=0)
    ok = download_images(
        tasks,
        fetch,
        concurrency=settings.download_concurrency,
        on_progress=lambda done, total: progress.update(done=done, total=total),
    )
    tasks = [t for t in tasks if t.task_id in ok]
    progress.stage(
        Stage.CROPPING,
        total=len(tasks),
        done=0,
        counts={"downloaded": len(ok), "download_failed": len(exported.tasks) - len(ok)},
    )
    if top_box is None and any(not t.boxes for t in tasks):
        top_box = detector_top_box(settings)
    crops = build_crops(
        tasks,
        fetch,
        out_dir=run_dir / "crops",
        max_side=config.max_crop_side,
        max_pixels=settings.max_image_pixels,
        top_box=top_box,
        concurrency=settings.download_concurrency,
        on_progress=lambda done, total: progress.update(done=done, total=total),
    )
    crops.counts["download_failed"] = len(exported.tasks) - len(ok)
    progress.update(counts=dict(crops.counts))
    return crops


def _split(crops: CropSet, config: TrainConfig, progress: Progress) -> tuple[SplitResult, dict]:
    progress.stage(Stage.SPLITTING)
    kept, rare = apply_min_examples(crops.crops, config.min_examples_per_class, config.other_label)
    species = sorted({c.label for c in kept})
    if len(species) < MIN_SPECIES:
        raise EmptyDatasetError(
            f"only {len(species)} species ({', '.join(species) or 'none'}) have at least "
            f"{config.min_examples_per_class} labelled crops (dropped: {rare['dropped'] or 'none'}); label more "
            "animals or lower MIN_EXAMPLES_PER_CLASS"
        )
    try:
        split = split_crops(
            kept, val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed
        )
    except ValueError as exc:
        raise EmptyDatasetError(f"{exc}; label more photos") from exc
    if len(split.labels) < MIN_SPECIES:
        raise EmptyDatasetError(f"the training split holds only {split.labels}; label more photos or locations")
    progress.update(counts=split.counts(), grouping=split.grouping)
    return split, rare


def _train(split: SplitResult, config: TrainConfig, run_dir: Path, progress: Progress) -> FitResult:
    progress.stage(Stage.TRAINING, epochs=config.epochs)
    index = {label: i for i, label in enumerate(split.labels)}

    def samples(s: Split) -> list[tuple[Path, int]]:
        return [(c.path, index[c.label]) for c in split.splits[s]]

    def on_epoch(stats: EpochStats, epochs: int) -> None:
        progress.update(
            epoch=stats.epoch,
            epochs=epochs,
            loss=round(stats.loss, 5),
            val_macro_f1=round(stats.val_macro_f1, 5),
            detail=f"epoch {stats.epoch}/{epochs}",
        )

    return fit(
        samples(Split.TRAIN),
        samples(Split.VAL),
        num_classes=len(split.labels),
        preprocessing=_preprocessing(config),
        config=config,
        run_dir=run_dir,
        on_epoch=on_epoch,
        on_batch=progress.check_alive,
    )


def _evaluate(
    fitted: FitResult,
    split: SplitResult,
    config: TrainConfig,
    models_dir: Path,
    project: str,
    served_version: str | None,
    run_dir: Path,
    progress: Progress,
) -> tuple[Evaluation, Evaluation | None, str]:
    progress.stage(Stage.EVALUATING, served=served_version)
    test_crops: list[Crop] = split.splits[Split.TEST]
    test = evaluate_network(fitted.state_dict, test_crops, split.labels, _preprocessing(config), config)
    plot_confusion(test, run_dir / "confusion_matrix.png", f"project {project}: test split ({test.count} crops)")
    served, note = None, "no model served"
    if served_version is not None:
        served, note = evaluate_served(
            bundle_dir(models_dir, project, served_version), test_crops, split.labels, config.device
        )
    progress.update(test_macro_f1=round(test.macro_f1, 5), served_macro_f1=served.macro_f1 if served else None)
    return test, served, note


def detector_top_box(settings: Settings) -> TopBox:
    """Load DETECTOR_MODEL and return the finder of the top animal box (at or above CLASSIFY_THRESHOLD)."""
    from backend.vision.detector import Detector

    detector = Detector.load(settings)

    def top_box(image):
        found = detector.detect([image], ["image"], settings.classify_threshold)[0]
        if isinstance(found, str):
            return None
        animals = [d for d in found if d.category == ANIMAL_CATEGORY]
        return animals[0].bbox if animals else None

    return top_box


def _metrics(
    exported: ExportedProject,
    crops: CropSet,
    rare: dict,
    split: SplitResult,
    fitted: FitResult,
    test: Evaluation,
    served: Evaluation | None,
    served_version: str | None,
    note: str,
    decision: GateDecision,
    config: TrainConfig,
) -> dict:
    """The content of ``metrics.json``."""
    return {
        "export": exported.counts(),
        "crops": dict(sorted(crops.counts.items())),
        "min_examples": rare,
        "split": {**split.report, "counts": split.counts()},
        "training": {
            "epochs_run": len(fitted.history),
            "best_epoch": fitted.best_epoch,
            "best_val_macro_f1": fitted.best_val_macro_f1,
            "stopped_early": fitted.stopped_early,
            "device": fitted.device,
            "history": [asdict(h) for h in fitted.history],
        },
        "test": test.to_dict(),
        "served": {"version": served_version, "note": note, **(served.to_dict() if served else {"macro_f1": None})},
        "gate": {"promote": decision.promote, "reason": decision.reason, "min_gain": config.promotion_min_gain},
        "config": config.to_dict(),
    }


def _headline(test: Evaluation, served: Evaluation | None) -> dict[str, float]:
    headline = {"top1": round(test.top1, 5), "macro_f1": round(test.macro_f1, 5)}
    if served is not None:
        headline["served_macro_f1"] = round(served.macro_f1, 5)
    return headline


def _preprocessing(config: TrainConfig) -> Preprocessing:
    return Preprocessing(input_size=config.input_size)


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
