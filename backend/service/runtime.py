"""The service's per-process composition: detector pipeline, classifier slots, set-ups, Label Studio clients.

One :class:`Runtime` per process (built in the app's lifespan): the :class:`~backend.vision.pipeline.Pipeline`
around the detector loaded once, the :class:`~backend.service.slots.ClassifierSlots` with the hot-swap
watcher, the project set-ups, and a pool of Label Studio clients. All methods are blocking; routes
call them through a thread pool. The flows are drawn in ``docs/architecture.md``.
"""

from __future__ import annotations

import logging
import threading

import httpx
import redis

from backend.config import Settings
from backend.contracts.bundle import BLANK_LABEL
from backend.contracts.detection_store import DetectionStore
from backend.contracts.keys import RedisKeys
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.label_config import LabelMapping, parse_label_config
from backend.labelstudio.predictions import unmapped_species
from backend.labelstudio.task_predictor import predict_tasks
from backend.service.metrics import Metrics
from backend.service.model_watcher import ModelWatcher
from backend.service.project_setups import ProjectSetup, ProjectSetups
from backend.service.slots import ClassifierSlot, ClassifierSlots
from backend.vision.detector import Detector
from backend.vision.device import resolve_device
from backend.vision.pipeline import Pipeline
from backend.vision.thresholds import Thresholds

logger = logging.getLogger(__name__)


class Runtime:
    """Detector pipeline, classifier slots, project set-ups and Label Studio clients of one process.

    Args:
        settings: The process settings.
        detector: The loaded detector.
        metrics: Where counters go (a fresh registry if omitted).
        redis_client: Short-timeout client used for the set-up record (None: memory only).
        transport: httpx transport for Label Studio downloads (tests).
    """

    def __init__(
        self,
        settings: Settings,
        detector: Detector,
        *,
        metrics: Metrics | None = None,
        redis_client: redis.Redis | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.detector = detector
        self.metrics = metrics or Metrics()
        self.redis = redis_client
        self.keys = RedisKeys(settings.redis_prefix)
        self.pipeline = Pipeline(
            detector,
            fetch_threads=settings.download_concurrency,
            max_pixels=settings.max_image_pixels,
            observer=self.metrics.pipeline_observer(),
            store=DetectionStore.under(settings.data_dir),
        )
        self.slots = ClassifierSlots(
            settings.models_dir,
            detector.id,
            resolve_device(settings.detector_device),
            on_swap=lambda project: self.metrics.model_swaps.inc(),
        )
        self.setups = ProjectSetups(settings, redis_client, self.keys)
        self._transport = transport
        self._clients: dict[tuple[str | None, str | None], LabelStudioClient] = {}
        self._clients_lock = threading.Lock()
        self._watcher = ModelWatcher(settings, self.keys, self.slots.refresh, self.slots.projects)

    # --- versions ------------------------------------------------------------------------------

    def model_version(self, project: str | None, *, load: bool = True) -> str:
        """The project's ``model_version`` (see :meth:`ClassifierSlots.model_version`)."""
        return self.slots.model_version(project, load=load)

    def version_of(self, slot: ClassifierSlot) -> str:
        return self.slots.version_of(slot)

    def slot(self, project: str | None) -> ClassifierSlot:
        return self.slots.slot(project)

    # --- project set-up ------------------------------------------------------------------------

    def project_setup(self, project: str | None) -> ProjectSetup:
        return self.setups.get(project)

    def thresholds(self, project: str | None) -> Thresholds:
        return self.setups.thresholds(project)

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
        thresholds = self.thresholds(project)
        done = predict_tasks(
            self.pipeline,
            self.ls_client(setup),
            tasks,
            mapping,
            slot.classifier,
            self.version_of(slot),
            thresholds,
            context=f"project {project}",
        )
        for outcome, count in done.outcomes.items():
            self.metrics.tasks.labels("predict", outcome).inc(count)
        for box in done.shown_boxes:
            self.metrics.boxes.labels(box.detection.category).inc()
        for label in unmapped_species(done.shown_boxes, mapping, thresholds):
            self.metrics.unmapped_labels.labels(label).inc()
        return done.predictions

    def unmapped_labels(self, project: str, mapping: LabelMapping) -> list[str]:
        """The labels of the project's loaded classifier that the labeling config cannot show."""
        classifier = self.slots.slot(project).classifier
        return mapping.unmapped_labels(classifier.labels, BLANK_LABEL) if classifier is not None else []

    # --- lifecycle -----------------------------------------------------------------------------

    def start_watcher(self) -> None:
        """Start the thread that swaps classifiers on announcements and pointer changes."""
        self._watcher.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the watcher, the download threads and the Label Studio clients."""
        self._watcher.stop(timeout_s)
        self.pipeline.close()
        with self._clients_lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
