"""Prometheus metrics of one backend process (served at ``GET /metrics``).

With ``PROMETHEUS_MULTIPROC_DIR`` set (``camtrap serve`` and ``camtrap worker`` set it to
``DATA_DIR/metrics``), every process (uvicorn workers, RQ work horses) writes its values there and
any worker's ``/metrics`` serves the sum over all of them (prometheus-client's multiprocess mode;
delete the folder while everything is stopped to reset the totals). Without it each process serves
its own values plus the pipeline's counters (``backend.vision.counters``). Failed predictions show
up here (``camtrap_tasks_total{outcome="failed"}``) because
Label Studio does not surface them anywhere.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from backend.vision.counters import counters, multiprocess_dir

#: Histogram buckets for per-request and per-stage latencies, in seconds.
LATENCY_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The counters and histograms of one process, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.multiprocess = multiprocess_dir()  # before any metric is created
        self.registry = registry or CollectorRegistry()
        self.tasks = Counter(
            "camtrap_tasks_total",
            "Tasks and images answered, by outcome (predicted, failed)",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.image_failures = Counter(
            "camtrap_image_failures_total",
            "Images that could not be processed, by stage (fetch, decode, detect)",
            ["stage"],
            registry=self.registry,
        )
        self.boxes = Counter(
            "camtrap_boxes_total",
            "Boxes at or above the show threshold, by MegaDetector category",
            ["category"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "camtrap_request_seconds",
            "Time to answer a prediction request",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "camtrap_stage_seconds",
            "Time spent per batch in each stage (fetch, detect, classify)",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.unmapped_labels = Counter(
            "camtrap_unmapped_labels_total",
            "Species guesses left out of predictions because the labeling config has no choice for them",
            ["label"],
            registry=self.registry,
        )
        self.model_swaps = Counter(
            "camtrap_model_swaps_total",
            "Classifier bundles swapped in (promotion, rollback, first load)",
            registry=self.registry,
        )

    def pipeline_observer(self) -> _PipelineMetrics:
        """The pipeline's stage timings and failures, into these metrics."""
        return _PipelineMetrics(self)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        if self.multiprocess is not None:
            summed = CollectorRegistry()
            MultiProcessCollector(summed, str(self.multiprocess))
            return generate_latest(summed), CONTENT_TYPE_LATEST
        return generate_latest(self.registry) + generate_latest(counters().registry), CONTENT_TYPE_LATEST


class _PipelineMetrics:
    """``backend.vision.pipeline.PipelineObserver`` over :class:`Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def stage_seconds(self, stage: str, seconds: float) -> None:
        self._metrics.stage_seconds.labels(stage).observe(seconds)

    def image_failed(self, stage: str) -> None:
        self._metrics.image_failures.labels(stage).inc()

    def detector_images(self, count: int) -> None:
        pass  # counted process-wide by the pipeline (backend.vision.counters)

    def classifier_crops(self, count: int) -> None:
        pass
