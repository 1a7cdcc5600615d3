"""Process-wide work counters of the vision pipeline, summed over processes by prometheus-client.

``camtrap_detector_images_total`` counts images through the detector's forward pass (images answered
from the detection store are not counted) and ``camtrap_classifier_crops_total`` crops through a
species classifier, in whichever process runs the pipeline: a uvicorn worker, an RQ work horse, the
CLI. With ``PROMETHEUS_MULTIPROC_DIR`` set (``camtrap serve`` and ``camtrap worker`` set it to
``DATA_DIR/metrics``), every process writes its values there and ``GET /metrics`` of any worker
serves the sum (prometheus-client's multiprocess mode); without it they are per process.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, values

#: Where prometheus-client's multiprocess mode keeps the per-process value files.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Its folder under DATA_DIR.
METRICS_DIRNAME = "metrics"


def multiprocess_dir() -> Path | None:
    """The multiprocess folder when the mode is on (and prometheus-client switched to it), else None.

    prometheus-client picks its value class when it is first imported; a process that imported it
    before ``PROMETHEUS_MULTIPROC_DIR`` was set is switched here, before any metric is created.
    """
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    if values.ValueClass.__name__ != "MmapedValue":
        values.ValueClass = values.MultiProcessValue()
    return Path(directory)


def enable_multiprocess(data_dir: Path) -> Path:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` to ``DATA_DIR/metrics`` unless already set; child processes inherit it."""
    os.environ.setdefault(MULTIPROC_ENV, str((Path(data_dir) / METRICS_DIRNAME).resolve()))
    found = multiprocess_dir()
    assert found is not None
    return found


class _Counters:
    def __init__(self) -> None:
        multiprocess_dir()
        self.registry = CollectorRegistry()
        self.detector_images = Counter(
            "camtrap_detector_images",
            "Images through the detector's forward pass (images answered from the detection store are not counted)",
            registry=self.registry,
        )
        self.classifier_crops = Counter(
            "camtrap_classifier_crops", "Crops through a species classifier", registry=self.registry
        )


_counters: _Counters | None = None


def counters() -> _Counters:
    """This process's counters (created on first use, so that the multiprocess setting is seen)."""
    global _counters
    if _counters is None:
        _counters = _Counters()
    return _counters
