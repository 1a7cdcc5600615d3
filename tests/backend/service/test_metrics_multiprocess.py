"""``camtrap serve --workers 2``: /metrics of either worker serves the sum over both (multiprocess mode)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector

from backend.config import Settings
from tests.backend.conftest import PHOTOS
from tests.backend.fake_ls import LEGACY_TOKEN, FakeLabelStudio
from tests.conftest import REPO_ROOT
from tests.processes import ManagedProcess, free_port, wait_until


def _total(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{name}(\{{[^}}]*{labels}[^}}]*\}})? ([0-9.e+]+)$"
    return sum(float(m.group(2)) for m in re.finditer(pattern, text, re.MULTILINE))


def _tasks_per_pid(directory: Path) -> dict[str, float]:
    """camtrap_tasks_total per process, read from each process's own value file."""
    out: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            if metric.name == "camtrap_tasks":
                out[path.stem] = sum(s.value for s in metric.samples if s.name == "camtrap_tasks_total")
    return out


def test_two_uvicorn_workers_serve_summed_counters(
    tmp_path: Path,
    fake_ls: tuple[FakeLabelStudio, str],
    redis_url: str,
    tiny_detector_path: Path,
    label_config: str,
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in names and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        DATA_DIR=str(data_dir),
        REDIS_URL=redis_url,
        LABEL_STUDIO_URL=fake_ls[1],
        LABEL_STUDIO_API_KEY=LEGACY_TOKEN,
        DETECTOR_MODEL=str(tiny_detector_path),
        DETECTOR_DEVICE="cpu",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO_ROOT),
    )
    argv = [sys.executable, "-m", "backend.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    server = ManagedProcess("serve", argv, env, REPO_ROOT, tmp_path / "serve.log").start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/health").status_code == 200, timeout=120, what="serve", processes=[server])
        metrics_dir = data_dir / "metrics"
        # /health answers once one worker is up: wait for the second (each writes its counter file at start).
        started = lambda: len(list(metrics_dir.glob("counter_*.db"))) >= 2  # noqa: E731
        wait_until(started, timeout=180, what="two workers", processes=[server])
        sent = 0
        # New connections until both workers have answered some (the kernel picks the worker).
        while sent < 80 and (sent < len(PHOTOS) or len([v for v in _tasks_per_pid(metrics_dir).values() if v]) < 2):
            task = {"id": sent, "data": {"image": f"/data/upload/5/{PHOTOS[sent % len(PHOTOS)]}"}}
            body = {"tasks": [task], "project": "5.17", "label_config": label_config}
            assert httpx.post(f"{url}/predict", json=body, timeout=120).status_code == 200
            sent += 1
        per_pid = _tasks_per_pid(metrics_dir)
        assert len([v for v in per_pid.values() if v]) == 2, f"one worker answered everything: {per_pid}"
        for _ in range(6):  # whichever worker answers the scrape, it reports both
            text = httpx.get(f"{url}/metrics").text
            assert _total(text, "camtrap_tasks_total", 'route="predict"') == sent
            assert _total(text, "camtrap_detector_images_total") == len(PHOTOS)  # the store answers the rest
    finally:
        server.stop()
