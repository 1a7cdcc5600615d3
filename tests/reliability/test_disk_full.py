"""Disk full while a bundle, a detection store entry or a cached image is written (issue 12).

Every test runs on a real full filesystem (a size-capped tmpfs filled with a filler file, see
``tests/reliability/small_disk.py``): the writes fail with the kernel's own ENOSPC, nothing is patched.
Each asserts what is kept: the old bundle stays served, no partial file is left or read, the
service keeps answering, and the failure is one clear sentence (bundles) or a warning (caches).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
import torch
from safetensors.torch import load_file

from backend.config import Settings
from backend.contracts import registry
from backend.contracts.bundle import WEIGHTS_FILE, list_bundles, read_manifest
from backend.contracts.detection_store import DetectionStore
from backend.contracts.keys import RedisKeys
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.image_cache import ImageCache
from backend.vision.detector import Detector
from tests.backend.bundles import write_bundle
from tests.backend.conftest import PHOTOS, running_app
from tests.backend.service.test_predict_store import _counter
from tests.reliability.small_disk import PAGE, fill, make_room
from trainer.errors import BundleWriteError
from trainer.publish import BundleFiles, publish

PROJECT = "5"
TASKS = [{"id": i, "data": {"image": f"/data/upload/{PROJECT}/{name}"}} for i, name in enumerate(PHOTOS)]


def _predict(url: str, label_config: str) -> list[dict]:
    body = {"tasks": TASKS, "project": PROJECT, "label_config": label_config}
    response = httpx.post(f"{url}/predict", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def _classifier_of(results: list[dict]) -> set[str]:
    return {result["model_version"].split("+", 1)[1] for result in results}


def _leftovers(root: Path) -> list[str]:
    """Temp files and staging directories under ``root``: what a failed write must not leave behind."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".tmp-*"))


@pytest.mark.parametrize("leave", [0, 256 * 1024], ids=["no-byte-free", "weights-do-not-fit"])
def test_bundle_on_a_full_disk_fails_clearly_and_the_old_one_stays_served(
    small_disk: Path,
    settings_factory: Callable[..., Settings],
    detector: Detector,
    label_config: str,
    redis_client: redis.Redis,
    leave: int,
) -> None:
    settings = settings_factory()
    assert settings.data_dir == small_disk
    models = settings.models_dir
    old = write_bundle(models, PROJECT, "v1", serve=True)
    # the next model as the training job hands it to publish(): same size as the served one (~6 MB)
    manifest = read_manifest(old).model_copy(update={"version": "v2", "job_id": "train-5", "parent_version": "v1"})
    files = BundleFiles(load_file(old / WEIGHTS_FILE), {"test": {"macro_f1": 0.9}}, "# card\n")
    keys = RedisKeys(settings.redis_prefix)
    with running_app(settings, detector) as url:
        assert _classifier_of(_predict(url, label_config)) == {"v1"}
        fill(small_disk, leave)
        with pytest.raises(BundleWriteError) as raised:
            publish(models, manifest, files, connection=redis_client, keys=keys)
        message = str(raised.value)  # what trainer.jobs.train_project records as the job's error
        assert raised.value.errno == errno.ENOSPC
        for part in ("disk full", "No space left on device", str(models / PROJECT), "still serves v1"):
            assert part in message, message
        assert [m.version for m in list_bundles(models, PROJECT)] == ["v1"]
        assert registry.read_current(models, PROJECT) == "v1"
        assert not (models / PROJECT / "v2").exists()
        assert _leftovers(models) == []
        time.sleep(3 * settings.model_poll_interval_s)  # the watcher re-read the pointer meanwhile
        assert _classifier_of(_predict(url, label_config)) == {"v1"}
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200

        make_room(small_disk)  # the fix the message names: free space and train again
        publish(models, manifest, files, connection=redis_client, keys=keys)
        deadline = time.monotonic() + 10
        while _classifier_of(_predict(url, label_config)) != {"v2"}:
            assert time.monotonic() < deadline, "v2 was never served after the disk had room again"
            time.sleep(settings.model_poll_interval_s)


def test_pointer_write_on_a_full_disk_leaves_the_old_version_served(
    small_disk: Path, settings_factory: Callable[..., Settings]
) -> None:
    """The bundle fits but the pointer's temp file does not: the new bundle is listed, the old one served."""
    models = settings_factory().models_dir
    old = write_bundle(models, PROJECT, "v1", serve=True)
    manifest = read_manifest(old).model_copy(update={"version": "v2", "job_id": "train-5"})
    files = BundleFiles({"w": torch.ones(3)}, {}, "# card\n")
    # leave exactly the pages the small bundle needs (4 files of under a page each), none for the pointer
    fill(small_disk, 4 * PAGE)
    with pytest.raises(BundleWriteError) as raised:
        publish(models, manifest, files, connection=None, keys=RedisKeys())
    message = str(raised.value)
    assert "pointer could not be moved" in message and "still serves v1" in message, message
    assert "POST /models/v2/promote" in message
    assert registry.read_current(models, PROJECT) == "v1"
    assert _leftovers(models) == []
    assert [m.version for m in list_bundles(models, PROJECT)] == ["v1", "v2"]  # whole, promotable by hand


def test_predict_on_a_full_disk_answers_and_stores_no_partial_entry(
    small_disk: Path,
    settings_factory: Callable[..., Settings],
    detector: Detector,
    label_config: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_factory()
    store = DetectionStore.under(settings.data_dir)
    cache_root = settings.cache_dir / "images"
    caplog.set_level(logging.WARNING)
    with running_app(settings, detector) as url:
        fill(small_disk)
        full = _predict(url, label_config)
        assert sum(len(result["result"]) for result in full) > 0, "the tiny detector found no box at all"
        assert "cannot write the detection store entry" in caplog.text
        assert "image cache write failed" in caplog.text
        assert store.count("md_tiny_md_v5@native") == 0
        assert ImageCache(cache_root).size_bytes() == 0
        assert _leftovers(settings.data_dir) == []
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200

        make_room(small_disk)
        caplog.clear()
        detected = _counter(url, "camtrap_detector_images_total")
        again = _predict(url, label_config)  # recomputed (nothing was stored), now stored
        assert _counter(url, "camtrap_detector_images_total") == detected + len(PHOTOS)
        assert store.count("md_tiny_md_v5@native") == len(PHOTOS)
        served = _predict(url, label_config)  # read back from the store: whole entries, same boxes
        assert _counter(url, "camtrap_detector_images_total") == detected + len(PHOTOS), "not read from the store"
    assert [r["result"] for r in full] == [r["result"] for r in again] == [r["result"] for r in served]
    assert "corrupt detection store entry" not in caplog.text


@pytest.mark.parametrize("leave", [0, 64 * 1024], ids=["no-byte-free", "image-does-not-fit"])
def test_image_fetch_on_a_full_disk_returns_the_bytes_and_caches_no_partial_file(
    small_disk: Path,
    settings_factory: Callable[..., Settings],
    image_dir: Path,
    caplog: pytest.LogCaptureFixture,
    leave: int,
) -> None:
    settings = settings_factory()
    caplog.set_level(logging.WARNING)
    photo = (image_dir / PHOTOS[0]).read_bytes()
    assert len(photo) > leave, "the photo must be larger than the space left, or it would fit"
    with LabelStudioClient(settings) as client:
        client.fetch_image(f"/data/upload/{PROJECT}/{PHOTOS[1]}")  # the cache directory exists, a sweep ran
        fill(small_disk, leave)
        assert client.fetch_image(f"/data/upload/{PROJECT}/{PHOTOS[0]}") == photo
        assert "image cache write failed" in caplog.text and "No space left on device" in caplog.text
        cache = ImageCache(settings.cache_dir / "images")
        assert _leftovers(cache.root) == []
        assert cache.get(f"{client.base_url}/data/upload/{PROJECT}/{PHOTOS[0]}") is None
        assert client.fetch_image(f"/data/upload/{PROJECT}/{PHOTOS[0]}") == photo  # downloaded again, not cut
