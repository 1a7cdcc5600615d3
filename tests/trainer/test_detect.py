"""``camtrap detect``: MegaDetector's batch format (checked by megadetector's validator), the store, kill + resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from megadetector.postprocessing.validate_batch_results import validate_batch_results

from backend.config import Settings
from backend.contracts.detection_store import DetectionStore, detector_key
from tests.conftest import REPO_ROOT
from trainer.detect import checkpoint_path, run_detection


@pytest.fixture
def photo_tree(tmp_path: Path, ena24_dir: Path) -> Path:
    """Two camera folders of ENA24 photos (one nested) and an unreadable file."""
    root = tmp_path / "season"
    photos = sorted(ena24_dir.glob("*.jpg"))
    for index, photo in enumerate(photos):
        folder = root / ("cam1" if index % 2 else "cam2/day 1")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, folder / photo.name)
    (root / "cam1" / "broken.jpg").write_bytes(b"<html>not a photo</html>")
    (root / "cam1" / "notes.txt").write_text("not an image extension: skipped")
    return root


def _env(tiny_detector_path: Path, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DETECTOR_MODEL": str(tiny_detector_path),
        "DETECTOR_DEVICE": "cpu",
        "DETECTOR_BATCH_SIZE": "1",
        "DATA_DIR": str(data_dir),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }


def test_detect_writes_validated_md_json_with_relative_paths_and_the_store(
    tmp_path: Path, photo_tree: Path, tiny_detector_path: Path
) -> None:
    settings = Settings(
        detector_model=str(tiny_detector_path), detector_device="cpu", detector_batch_size=4, data_dir=tmp_path / "d"
    )
    output = tmp_path / "out" / "results.json"
    document = run_detection(
        [photo_tree / "cam1", photo_tree / "cam2"], output, settings=settings, threshold=0.05, progress=False
    )
    checked = validate_batch_results(str(output))["validation_results"]
    assert checked["errors"] == [] and checked["warnings"] == []
    files = [image["file"] for image in document["images"]]
    assert files == sorted(files) and len(files) == 22
    assert "cam2/day 1/352.jpg" in files and "cam1/broken.jpg" in files
    broken = next(image for image in document["images"] if image["file"] == "cam1/broken.jpg")
    assert broken["failure"] and broken["detections"] is None
    assert all(d["conf"] >= 0.05 for image in document["images"] for d in image["detections"] or [])
    assert document["info"]["detector_metadata"] and document["info"]["format_version"]
    store = DetectionStore.under(settings.data_dir)
    assert store.count(detector_key("md_tiny_md_v5", None)) == 21
    assert not checkpoint_path(output).exists()


def test_missing_source_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backend.cli", "detect", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=120,
    )
    assert done.returncode == 1
    assert "nowhere does not exist" in done.stderr


def test_killed_and_resumed_run_gives_the_same_results(
    tmp_path: Path, photo_tree: Path, tiny_detector_path: Path
) -> None:
    every = 2
    whole, cut = tmp_path / "whole.json", tmp_path / "cut.json"
    argv = [sys.executable, "-m", "backend.cli", "detect", str(photo_tree), "--no-progress", "--checkpoint-every"]
    subprocess.run(
        [*argv, str(every), "-o", str(whole)], env=_env(tiny_detector_path, tmp_path / "a"), check=True, timeout=300
    )

    env = _env(tiny_detector_path, tmp_path / "b")
    proc = subprocess.Popen([*argv, str(every), "-o", str(cut)], env=env)
    checkpoint = checkpoint_path(cut)
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not cut.exists()
    saved = json.loads(checkpoint.read_text())["checkpoint"]
    assert 0 < len(saved) < 22 and len(saved) % every == 0  # at most `every` images of work lost

    subprocess.run([*argv, str(every), "--resume", "-o", str(cut)], env=env, check=True, timeout=300)
    assert not checkpoint.exists()
    assert validate_batch_results(str(cut))["validation_results"]["errors"] == []
    resumed, reference = json.loads(cut.read_text()), json.loads(whole.read_text())
    assert resumed["images"] == reference["images"]
    assert resumed["detection_categories"] == reference["detection_categories"]
