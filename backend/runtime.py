"""The inference runtime of one backend process: detector, per-project classifiers, version strings.

One :class:`Runtime` per process holds the detector (loaded once) and, per project, a
:class:`ClassifierSlot`: the bundle ``current.json`` named when it was read and the classifier
loaded from it. A request reads its project's slot once and uses it to the end, so a swap never
mixes two models in one answer and the ``model_version`` it stamps is the classifier it used.

Slots are replaced, never mutated: on first use of a project, on :meth:`Runtime.refresh`, and by the
watcher thread (:class:`~backend.model_watcher.ModelWatcher`), which listens on the Redis models channel
and re-reads every known project's pointer every ``MODEL_POLL_INTERVAL_S`` (so a promotion is picked up
even while Redis is down). Loading happens on the watcher thread (or the first request's worker thread),
never on the event loop. Project set-ups and thresholds are kept by
:class:`~backend.project_setup.ProjectSetups`; the runtime delegates to it.

All methods are blocking; routes call them through a thread pool.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import redis
import torch
from PIL import Image

from backend import registry
from backend.bundle import bundle_dir
from backend.classifier import SpeciesClassifier
from backend.config import Settings
from backend.detector import Detector
from backend.errors import BundleError, ImageError
from backend.images import decode_image
from backend.labels import LabelMapping, parse_label_config
from backend.ls_client import LabelStudioClient
from backend.metrics import Metrics
from backend.model_watcher import ModelWatcher
from backend.preprocess import crop_square
from backend.project_setup import ProjectSetup, ProjectSetups
from backend.redis_keys import RedisKeys
from backend.results import Box, Thresholds, empty_prediction, is_animal, ls_prediction

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierSlot:
    """What a project serves: the pointer value acted on, and the classifier loaded (None: boxes only)."""

    pointer: str | None = None
    classifier: SpeciesClassifier | None = None

    @property
    def version(self) -> str | None:
        return self.classifier.version if self.classifier is not None else None


NO_CLASSIFIER = ClassifierSlot()


@dataclass
class ImageJob:
    """One image through the pipeline: its name, the decoded image or the reason it failed, its boxes."""

    name: str
    image: Image.Image | None = None
    size: tuple[int, int] = (0, 0)
    failure: str | None = None
    boxes: list[Box] | None = None


class Runtime:
    """Detector, classifiers, project set-ups and the hot-swap watcher of one process.

    Args:
        settings: The process settings.
        detector: The loaded detector.
        metrics: Where counters go (a fresh registry if omitted).
        redis_client: Short-timeout client used for the set-up hash (None: memory only).
        transport: httpx transport for Label Studio downloads (tests).
    """

    def __init__(
        self,
        settings: Settings,
        detector: Detector,
        *,
        metrics: Metrics | None = None,
        redis_client: redis.Redis | None = None,
        transport: object | None = None,
    ) -> None:
        self.settings = settings
        self.detector = detector
        self.metrics = metrics or Metrics()
        self.redis = redis_client
        self.keys = RedisKeys(settings.redis_prefix)
        self._transport = transport
        self._slots: dict[str, ClassifierSlot] = {}
        self._setups = ProjectSetups(settings, redis_client, self.keys)
        self._clients: dict[tuple[str | None, str | None], LabelStudioClient] = {}
        self._load_lock = threading.Lock()
        self._clients_lock = threading.Lock()
        self._fetcher = ThreadPoolExecutor(max(1, settings.download_concurrency), thread_name_prefix="image-fetch")
        self._watcher = ModelWatcher(settings, self.keys, self.refresh, self.loaded_projects)
        self.device = _classifier_device(settings.detector_device)

    # --- versions and classifiers ------------------------------------------------------------

    def model_version(self, project: str | None, *, load: bool = True) -> str:
        """The project's ``model_version``: detector id + the version of the classifier it serves.

        Args:
            project: Project id, or None for the detector alone.
            load: Load the project's classifier if this process has not yet (False: report the pointer's
                version without loading; used by ``/health``, which must never wait).
        """
        if project is None:
            return registry.model_version(self.detector.id, None)
        slot = self._slots.get(project)
        if slot is None and not load:
            return registry.model_version(self.detector.id, self._read_pointer(project))
        return self.version_of(slot or self.slot(project))

    def version_of(self, slot: ClassifierSlot) -> str:
        return registry.model_version(self.detector.id, slot.version)

    def slot(self, project: str | None) -> ClassifierSlot:
        """The project's current slot, loading its classifier on first use."""
        if project is None:
            return NO_CLASSIFIER
        slot = self._slots.get(project)
        return slot if slot is not None else self.refresh(project)

    def refresh(self, project: str) -> ClassifierSlot:
        """Re-read the project's pointer and swap in its bundle if it changed (blocking while loading).

        A bundle that fails to load is logged and the previous classifier stays in service.
        """
        with self._load_lock:
            pointer = self._read_pointer(project)
            current = self._slots.get(project)
            if current is not None and current.pointer == pointer:
                return current
            slot = ClassifierSlot(pointer, self._load_classifier(project, pointer, current))
            self._slots[project] = slot
        if current is None or current.version != slot.version:
            self.metrics.model_swaps.inc()
            logger.info("project %s now serves %s", project, self.version_of(slot))
        return slot

    def loaded_projects(self) -> list[str]:
        return list(self._slots)

    def _read_pointer(self, project: str) -> str | None:
        try:
            return registry.read_current(self.settings.models_dir, project)
        except BundleError as exc:
            logger.warning("project %s has no usable model pointer: %s", project, exc)
            return None

    def _load_classifier(
        self, project: str, version: str | None, current: ClassifierSlot | None
    ) -> SpeciesClassifier | None:
        if not version:
            return None
        try:
            return SpeciesClassifier.load(bundle_dir(self.settings.models_dir, project, version), self.device)
        except Exception as exc:  # BundleError, or whatever a corrupt weights file raises (SafetensorError...)
            kept = current.classifier if current is not None else None
            logger.error(
                "cannot load classifier %s of project %s (%s); still serving %s",
                version,
                project,
                exc,
                kept.version if kept else "boxes only",
            )
            return kept

    # --- project set-up ------------------------------------------------------------------------

    def remember_setup(
        self, project: str, schema: str | None, extra_params: dict, hostname: str | None, access_token: str | None
    ) -> ProjectSetup:
        """Keep what /setup sent, in memory and (best effort) in the Redis set-up hash."""
        return self._setups.remember(project, schema, extra_params, hostname, access_token)

    def project_setup(self, project: str | None) -> ProjectSetup:
        """The project's last set-up: from memory, else from the Redis hash (another process saw /setup)."""
        return self._setups.get(project)

    def thresholds(self, project: str | None) -> Thresholds:
        """Thresholds of a project: ``extra_params`` win over the environment."""
        return self._setups.thresholds(project)

    def ls_client(self, setup: ProjectSetup) -> LabelStudioClient:
        """A shared client for LABEL_STUDIO_URL (else /setup's hostname), with /setup's token as fallback."""
        url = self.settings.label_studio_url or setup.hostname
        key = (url, setup.access_token)
        with self._clients_lock:
            client = self._clients.get(key)
            if client is None:
                client = LabelStudioClient(
                    self.settings, url=url, fallback_token=setup.access_token, transport=self._transport
                )
                self._clients[key] = client
            return client

    # --- inference -----------------------------------------------------------------------------

    def predict_tasks(self, tasks: list[dict], project: str | None, label_config: str | None) -> list[dict]:
        """One Label Studio prediction per task, in order; a failed image gives an empty prediction.

        Raises:
            LabelConfigError: the labeling config is unsupported (nothing can be predicted).
        """
        setup = self.project_setup(project)
        mapping = parse_label_config(label_config or setup.schema or "")
        slot = self.slot(project)
        version = self.version_of(slot)
        thresholds = self.thresholds(project)
        client = self.ls_client(setup)
        refs = [_task_image(task, mapping) for task in tasks]
        jobs = self.run_images(
            [f"task {task.get('id')}" for task in tasks],
            [
                lambda ref=ref, task=task: client.fetch_image(ref, _task_id(task))
                for ref, task in zip(refs, tasks, strict=True)
            ],
            slot,
            thresholds,
        )
        predictions = []
        for task, job in zip(tasks, jobs, strict=True):
            if job.boxes is None:
                logger.warning("project %s, task %s: no prediction: %s", project, task.get("id"), job.failure)
                self.metrics.tasks.labels("predict", "failed").inc()
                predictions.append(empty_prediction(version))
                continue
            self.metrics.tasks.labels("predict", "predicted").inc()
            predictions.append(ls_prediction(job.boxes, mapping, *job.size, version, thresholds))
            self._count_boxes(job.boxes, thresholds)
        return predictions

    def run_images(
        self, names: list[str], sources: list, slot: ClassifierSlot, thresholds: Thresholds
    ) -> list[ImageJob]:
        """Fetch + decode (in parallel) -> detect (batched) -> classify animal boxes, for a list of images.

        Args:
            names: An identifier per image (logs, MegaDetector ``file``).
            sources: Per image, a callable returning its bytes (raising ImageError on failure).
            slot: The classifier slot to use for the whole batch.
            thresholds: The project's thresholds.

        Returns:
            An :class:`ImageJob` per image, in order: ``boxes`` set, or ``failure`` saying why not.
        """
        jobs = [ImageJob(name) for name in names]
        futures = [self._fetcher.submit(self._fetch_and_decode, source) for source in sources]
        batch = self.detector.batch_size
        for start in range(0, len(jobs), batch):
            chunk = list(zip(jobs[start : start + batch], futures[start : start + batch], strict=True))
            started = time.perf_counter()
            for job, future in chunk:
                self._collect(job, future)
            self.metrics.stage_seconds.labels("fetch").observe(time.perf_counter() - started)
            self._detect([job for job, _ in chunk if job.image is not None], slot, thresholds)
            for job, _ in chunk:
                job.image = None  # keep only the size: a batch's pixels are released as it completes
        return jobs

    def _fetch_and_decode(self, source: object) -> Image.Image:
        data = source()
        return decode_image(data, max_pixels=self.settings.max_image_pixels)

    def _collect(self, job: ImageJob, future: Future) -> None:
        try:
            job.image = future.result()
            job.size = job.image.size
        except ImageError as exc:
            job.failure = str(exc)
            self.metrics.image_failures.labels("fetch").inc()
        except Exception as exc:  # a bug must fail this image, not the batch
            logger.exception("unexpected error reading %s", job.name)
            job.failure = f"internal error reading the image ({type(exc).__name__})"
            self.metrics.image_failures.labels("fetch").inc()

    def _detect(self, jobs: list[ImageJob], slot: ClassifierSlot, thresholds: Thresholds) -> None:
        if not jobs:
            return
        started = time.perf_counter()
        try:
            outputs = self.detector.detect([j.image for j in jobs], [j.name for j in jobs], thresholds.detection)
        except Exception as exc:
            logger.exception("detector failed on a batch of %d images", len(jobs))
            outputs = [f"inference failure ({type(exc).__name__})"] * len(jobs)
        self.metrics.stage_seconds.labels("detect").observe(time.perf_counter() - started)
        for job, output in zip(jobs, outputs, strict=True):
            if isinstance(output, str):
                job.failure = f"detector: {output}"
                self.metrics.image_failures.labels("detect").inc()
            else:
                job.boxes = [Box(d) for d in output]
        if slot.classifier is not None:
            self._classify([j for j in jobs if j.boxes], slot.classifier, thresholds)

    def _classify(self, jobs: list[ImageJob], classifier: SpeciesClassifier, thresholds: Thresholds) -> None:
        targets: list[tuple[ImageJob, int]] = []
        crops: list[Image.Image] = []
        for job in jobs:
            for index, box in enumerate(job.boxes):
                if is_animal(box) and box.detection.conf >= thresholds.classify:
                    crop = crop_square(job.image, box.detection.bbox)
                    if crop is not None:
                        targets.append((job, index))
                        crops.append(crop)
        if not crops:
            return
        started = time.perf_counter()
        try:
            with self.detector.lock:
                guesses = classifier.classify(crops)
        except Exception:
            logger.exception(
                "classifier %s failed on %d crops; boxes are sent without species", classifier.version, len(crops)
            )
            return
        self.metrics.stage_seconds.labels("classify").observe(time.perf_counter() - started)
        for (job, index), guess in zip(targets, guesses, strict=True):
            job.boxes[index] = Box(job.boxes[index].detection, guess)

    def _count_boxes(self, boxes: list[Box], thresholds: Thresholds) -> None:
        for box in boxes:
            if box.detection.conf >= thresholds.show:
                self.metrics.boxes.labels(box.detection.category).inc()

    # --- hot-swap watcher ------------------------------------------------------------------------

    def start_watcher(self) -> None:
        """Start the thread that swaps classifiers on announcements and pointer changes."""
        self._watcher.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the watcher, the download threads and the Label Studio clients."""
        self._watcher.stop(timeout_s)
        self._fetcher.shutdown(wait=False, cancel_futures=True)
        with self._clients_lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def _task_image(task: dict, mapping: LabelMapping) -> str:
    data = task.get("data") if isinstance(task, dict) else None
    value = data.get(mapping.image_key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def _task_id(task: dict) -> int | None:
    value = task.get("id") if isinstance(task, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _classifier_device(setting: str | None) -> str:
    if setting:
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"
