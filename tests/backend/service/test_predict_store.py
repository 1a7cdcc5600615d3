"""/predict from the detection store: a second request for the same photos does not run the detector."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from backend.config import Settings
from backend.contracts.detection_store import DetectionStore
from backend.vision.detector import Detector
from tests.backend.conftest import PHOTOS, running_app


def _counter(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def test_cached_tasks_are_answered_without_the_detector(
    settings_factory: Callable[..., Settings], detector: Detector, label_config: str
) -> None:
    settings = settings_factory()
    tasks = [{"id": i, "data": {"image": f"/data/upload/5/{name}"}} for i, name in enumerate(PHOTOS)]
    body = {"tasks": tasks, "project": "5.17", "label_config": label_config}
    with running_app(settings, detector) as url:
        before = _counter(url, "camtrap_detector_images_total")  # process-wide: other tests count too
        first = httpx.post(f"{url}/predict", json=body, timeout=120).json()["results"]
        assert _counter(url, "camtrap_detector_images_total") == before + len(PHOTOS)
        second = httpx.post(f"{url}/predict", json=body, timeout=120).json()["results"]
        assert _counter(url, "camtrap_detector_images_total") == before + len(PHOTOS)
    assert [p["result"] for p in first] == [p["result"] for p in second]
    assert DetectionStore.under(settings.data_dir).count("md_tiny_md_v5@native") == len(PHOTOS)
