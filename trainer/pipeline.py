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
from backend.contracts.bundle import BundleManifest, Preprocessing, bundle_dir, new_version, read_split
from backend.contracts.keys import RedisKeys
from backend.contracts.setup_record import SetupRecord
from backend.errors import BundleError
from backend.formats.label_spec import LabelSpec
from backend.labelstudio.client import LabelStudioClient
from backend.vision.categories import ANIMAL_CATEGORY
from backend.vision.classifier import SpeciesClassifier, preprocessing_for
from backend.vision.device import resolve_device
from trainer.calibration import expected_calibration_error, fit_calibration
from trainer.card import render_card
from trainer.config import TrainConfig
from trainer.crops import CropSet, DetectionLookup, Fetch, TopBox, build_crops, download_images
from trainer.errors import EmptyDatasetError
from trainer.evaluate import Evaluation, Scored, evaluate, load_served, new_classifier, plot_confusion, score_crops
from trainer.export import ExportedProject, export_project
from trainer.gate import GateDecision, GateRules, decide_against_served, decide_first, not_comparable, unseen_by
from trainer.label_translation import spec_for_project
from trainer.presets import BOX_JITTER
from trainer.pretrained import offline_fallback
from trainer.progress import Progress, Stage
from trainer.publish import BundleFiles, publish
from trainer.split import Split, SplitResult, apply_min_examples, split_crops
from trainer.train import EpochStats, FitResult, fit

logger = logging.getLogger(__name__)

#: A run needs at least this many species after the rare ones are dropped.
MIN_SPECIES = 2
#: Fewer validation crops than this and the calibration is not fitted (it would fit noise).
MIN_CALIBRATION_CROPS = 10


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
    """The served model's macro-F1 on the crops the gate compared (None: not compared)."""
    bundle: str
    grouping: str = ""
    """What the split's units were: ``location``, ``folder``, ``sequence`` or ``photo``."""
    gate: dict | None = None
    """The gate's figures: compared species and crops, both macro-F1s, the gain and its interval."""
    unmapped_labels: dict[str, int] | None = None
    """Label values the labeling config's choices do not map, and how often they were met (left out)."""

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
    lookup: DetectionLookup | None = None,
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
        lookup: The detection store (MegaDetector's stored boxes of an image), for matched and blank crops.

    Raises:
        ExportError: Label Studio could not be read.
        EmptyDatasetError: not enough labelled crops or species.
    """
    progress = progress or Progress()
    keys = RedisKeys(settings.redis_prefix)
    run_dir = _fresh_dir(settings.runs_dir / job_id)
    if lookup is None:  # the boxes /predict, pre-annotation and `camtrap detect` stored (DATA_DIR/detections)
        lookup = settings_store_lookup(settings)
        top_box = top_box or lazy_top_box(settings)
    own_client = client is None
    client = client or make_client(settings, connection, keys, project)
    try:
        exported = _export(project, client, config, progress, spec_for_project(settings, connection, keys, project))
        crops = _crops(exported, client.fetch_image, settings, config, run_dir, progress, top_box, lookup)
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
    lookup: DetectionLookup | None = None,
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
    if lookup is None:  # boxes `camtrap detect` (or the service) stored; the detector loads only on a miss
        lookup = settings_store_lookup(settings)
        top_box = top_box or lazy_top_box(settings)
    crops = _crops(dataset.exported, dataset.fetch, settings, config, run_dir, progress, top_box, lookup)
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
    split, rare = _split(crops, config, project, progress)
    config = offline_fallback(config)
    fitted = _train(split, config, run_dir, progress)
    served_version = registry.read_current(models_dir, project)
    progress.stage(Stage.EVALUATING, served=served_version)
    manifest = BundleManifest(
        version=new_version(project),
        project=project,
        labels=split.labels,
        preprocessing=_preprocessing(config),
        backbone=config.backbone,
        parent_version=served_version,
        job_id=job_id,
        starting_weights=fitted.starting_weights,
    )
    device = resolve_device(config.device)
    classifier, calibration = _calibrate(fitted, split, manifest, device)
    test_crops = split.splits[Split.TEST]
    scored = score_crops(classifier, test_crops)
    calibration["ece_before"] = round(_ece(scored.logits.softmax(dim=1), test_crops, split.labels), 5)
    calibration["ece_after"] = round(_ece(scored.probabilities, test_crops, split.labels), 5)
    test = evaluate(scored, test_crops, split.labels)
    plot_confusion(test, run_dir / "confusion_matrix.png", f"project {project}: test split ({test.count} crops)")
    decision, served, compared = _gate(scored, split, config, models_dir, project, served_version)
    progress.update(test_macro_f1=round(test.macro_f1, 5), served_macro_f1=served.macro_f1 if served else None)

    progress.stage(Stage.PUBLISHING)
    metrics = _metrics(
        exported, crops, rare, split, fitted, test, served, served_version, decision, calibration, config
    )
    manifest = manifest.model_copy(
        update={
            "status": decision.status,
            "status_reason": decision.reason,
            "metrics": _headline(test, decision),
            "calibration": classifier.manifest.calibration,
        }
    )
    files = BundleFiles(
        fitted.state_dict,
        metrics,
        render_card(manifest, metrics),
        run_dir / "confusion_matrix.png",
        run_dir / "tensorboard",
        split=split.record(project, config.sequence_gap_s),
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
        decision.comparison.get("other_macro_f1") if served_version and decision.comparison.get("comparable") else None,
        str(path),
        grouping=split.grouping,
        gate=decision.comparison,
        unmapped_labels=dict(exported.unmapped.most_common()),
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
    lookup: DetectionLookup | None,
) -> CropSet:
    # A photo marked empty gives blank crops only from the boxes its annotator was shown.
    tasks = [t for t in exported.tasks if not t.empty or t.blanks or lookup is not None]
    no_boxes = len(exported.tasks) - len(tasks)
    progress.stage(Stage.DOWNLOADING, total=len(tasks), done=0)
    ok = download_images(
        tasks,
        fetch,
        concurrency=settings.download_concurrency,
        on_progress=lambda done, total: progress.update(done=done, total=total),
    )
    failed = len(tasks) - len(ok)
    tasks = [t for t in tasks if t.task_id in ok]
    progress.stage(
        Stage.CROPPING,
        total=len(tasks),
        done=0,
        counts={"downloaded": len(ok), "download_failed": failed},
    )
    if top_box is None and lookup is None and any(not t.boxes and t.image_species is not None for t in tasks):
        top_box = detector_top_box(settings)
    crops = build_crops(
        tasks,
        fetch,
        out_dir=run_dir / "crops",
        preprocessing=_preprocessing(config),
        max_pixels=settings.max_image_pixels,
        top_box=top_box,
        concurrency=settings.download_concurrency,
        on_progress=lambda done, total: progress.update(done=done, total=total),
        lookup=lookup,
        jitter=BOX_JITTER,
        min_detection_conf=settings.show_threshold,
    )
    crops.counts["download_failed"] = failed
    if no_boxes:
        crops.counts["empty_no_boxes"] += no_boxes
    progress.update(counts=dict(crops.counts))
    return crops


def _split(crops: CropSet, config: TrainConfig, project: str, progress: Progress) -> tuple[SplitResult, dict]:
    progress.stage(Stage.SPLITTING)
    kept, rare = apply_min_examples(crops.crops, config.min_examples_per_class, config.other_label)
    species = sorted({c.label for c in kept})
    if len(species) < MIN_SPECIES:
        raise EmptyDatasetError(
            f"only {len(species)} species ({', '.join(species) or 'none'}) have at least "
            f"{config.min_examples_per_class} labelled crops (dropped: {rare['dropped'] or 'none'}); label more "
            "animals or lower MIN_EXAMPLES_PER_CLASS"
        )
    split = split_crops(
        kept,
        project=project,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        sequence_gap_s=config.sequence_gap_s,
    )
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
        on_start=lambda start: progress.update(
            starting_weights=start.model_dump(), pretrained=start.pretrained, detail=start.describe()
        ),
    )


def _calibrate(
    fitted: FitResult, split: SplitResult, manifest: BundleManifest, device
) -> tuple[SpeciesClassifier, dict]:
    """Fit the calibration on the validation split; the new model as it will be served, and a report."""
    raw = new_classifier(fitted.state_dict, manifest, device)
    val = split.splits[Split.VAL]
    if len(val) < MIN_CALIBRATION_CROPS:
        logger.warning("only %d validation crops: no calibration (needs %d)", len(val), MIN_CALIBRATION_CROPS)
        return raw, {"skipped": f"only {len(val)} validation crops (needs {MIN_CALIBRATION_CROPS})"}
    index = {label: i for i, label in enumerate(split.labels)}
    train_counts = [0] * len(split.labels)
    for crop in split.splits[Split.TRAIN]:
        if not crop.train_only:
            train_counts[index[crop.label]] += 1
    calibration = fit_calibration(
        score_crops(raw, val).logits, [index[c.label] for c in val], [max(1, n) for n in train_counts]
    )
    calibrated = manifest.model_copy(update={"calibration": calibration})
    classifier = SpeciesClassifier(calibrated, raw.network, raw.device)
    report = {
        "temperature": calibration.temperature,
        "prior_correction": any(v != 0 for v in calibration.log_prior),
        "fitted_on_val_crops": len(val),
    }
    return classifier, report


def _ece(probabilities, crops, labels: list[str]) -> float:
    index = {label: i for i, label in enumerate(labels)}
    return expected_calibration_error(probabilities, [index[c.label] for c in crops])


def _gate(
    scored: Scored,
    split: SplitResult,
    config: TrainConfig,
    models_dir: Path,
    project: str,
    served_version: str | None,
) -> tuple[GateDecision, Evaluation | None, list[str]]:
    """The gate's decision, the served model's scores on the crops it was compared on, and their photos."""
    rules = GateRules(config.gate_min_test_per_class, config.gate_confidence, config.promotion_min_gain)
    test = split.splits[Split.TEST]
    if served_version is None:
        train_labels = [c.label for c in split.splits[Split.TRAIN] if not c.train_only]
        decision = decide_first([c.label for c in test], scored.predicted, train_labels, rules)
        return decision, None, sorted({c.photo for c in test})
    bundle = bundle_dir(models_dir, project, served_version)
    served, why = load_served(bundle, config.device)
    if served is None:
        return not_comparable(served_version, why), None, []
    try:
        record = read_split(bundle)
    except BundleError as exc:
        return not_comparable(served_version, f"its split.json cannot be read ({exc})"), None, []
    if record is None:
        return (
            not_comparable(
                served_version,
                "its bundle records no split.json (it was trained by an older version), so which photos it "
                "trained on is unknown",
            ),
            None,
            [],
        )
    kept, excluded = unseen_by(test, split.unit_of, record)
    position = {id(c): i for i, c in enumerate(test)}
    new_pred = [scored.predicted[position[id(c)]] for c in kept]
    served_scored = score_crops(served, kept)
    decision = decide_against_served(
        served_version,
        [c.label for c in kept],
        new_pred,
        served_scored.predicted,
        served.labels,
        split.labels,
        excluded,
        rules,
    )
    compared = sorted({c.photo for c in kept if c.label in decision.comparison.get("species", ())})
    return decision, evaluate(served_scored, kept, split.labels) if kept else None, compared


def settings_store_lookup(settings: Settings) -> DetectionLookup:
    """The detection store under DATA_DIR, for DETECTOR_MODEL at DETECTOR_IMAGE_SIZE."""
    from backend.contracts.detection_store import DetectionStore, detector_key
    from backend.contracts.registry import detector_id
    from backend.vision.pipeline import StoreLookup

    key = detector_key(detector_id(settings.detector_model), settings.detector_image_size)
    return StoreLookup(DetectionStore.under(settings.data_dir), key)


def lazy_top_box(settings: Settings) -> TopBox:
    """:func:`detector_top_box`, loading DETECTOR_MODEL only when an image misses the store."""
    loaded: list[TopBox] = []

    def top_box(image):
        if not loaded:
            loaded.append(detector_top_box(settings))
        return loaded[0](image)

    return top_box


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
    decision: GateDecision,
    calibration: dict,
    config: TrainConfig,
) -> dict:
    """The content of ``metrics.json``."""
    return {
        "export": {**exported.counts(), "unmapped": dict(exported.unmapped.most_common())},
        "crops": dict(sorted(crops.counts.items())),
        "min_examples": rare,
        "split": {**split.report, "counts": split.counts()},
        "training": {
            "epochs_run": len(fitted.history),
            "best_epoch": fitted.best_epoch,
            "best_val_macro_f1": fitted.best_val_macro_f1,
            "stopped_early": fitted.stopped_early,
            "device": fitted.device,
            "starting_weights": fitted.starting_weights.model_dump(),
            "history": [asdict(h) for h in fitted.history],
        },
        "calibration": calibration,
        "test": test.to_dict(),
        "served": {
            "version": served_version,
            "note": decision.reason if served_version else "no model served",
            **(served.to_dict() if served else {"macro_f1": None}),
        },
        "gate": {"promote": decision.promote, "reason": decision.reason, **decision.comparison},
        "config": config.to_dict(),
    }


def _headline(test: Evaluation, decision: GateDecision) -> dict[str, float]:
    headline = {"top1": round(test.top1, 5), "macro_f1": round(test.macro_f1, 5)}
    comparison = decision.comparison
    if comparison.get("comparable"):
        headline["gain"] = comparison["gain"]
        headline["gain_low"], headline["gain_high"] = comparison["interval"]
        if comparison.get("against") != "majority-class baseline":
            headline["served_macro_f1"] = comparison["other_macro_f1"]
    return headline


def _preprocessing(config: TrainConfig) -> Preprocessing:
    return preprocessing_for(config.backbone, config.input_size)


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
