"""Prometheus metrics of one backend process (served at ``GET /metrics``).

Each uvicorn worker process has its own registry: scrape each worker, or run one worker per
container. Failed predictions show up here (``camtrap_tasks_total{outcome="failed"}``) because
Label Studio does not surface them anywhere.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

#: Histogram buckets for per-request and per-stage latencies, in seconds.
LATENCY_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The counters and histograms of one process, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
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
        self.detector_images = Counter(
            "camtrap_detector_images",
            "Images through the detector's forward pass (images answered from the detection store are not counted)",
            registry=self.registry,
        )
        self.classifier_crops = Counter(
            "camtrap_classifier_crops",
            "Crops through the species classifier",
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
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _PipelineMetrics:
    """``backend.vision.pipeline.PipelineObserver`` over :class:`Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def stage_seconds(self, stage: str, seconds: float) -> None:
        self._metrics.stage_seconds.labels(stage).observe(seconds)

    def image_failed(self, stage: str) -> None:
        self._metrics.image_failures.labels(stage).inc()

    def detector_images(self, count: int) -> None:
        self._metrics.detector_images.inc(count)

    def classifier_crops(self, count: int) -> None:
        self._metrics.classifier_crops.inc(count)
