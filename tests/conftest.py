"""Fixtures shared by every test: real photos, a generated detector checkpoint, a private Redis."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.model_factory import make_yolov5_checkpoint
from tests.processes import RedisServer

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The shared ENA24 photos; ``CAMTRAP_TEST_IMAGES`` points elsewhere.
DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "data" / "ena24_small"
#: Generated checkpoints are kept here between runs (they are deterministic).
MODEL_CACHE = REPO_ROOT / ".cache" / "test-models"


@pytest.fixture(scope="session")
def ena24_dir() -> Path:
    path = Path(os.environ.get("CAMTRAP_TEST_IMAGES", DEFAULT_IMAGES))
    if not (path / "labels.csv").is_file():
        pytest.fail(f"test photos not found in {path}: set CAMTRAP_TEST_IMAGES to the ena24_small folder")
    return path


@pytest.fixture(scope="session")
def ena24_labels(ena24_dir: Path) -> dict[str, str]:
    """File name -> species, from ``labels.csv`` (21 photos, 7 species)."""
    with open(ena24_dir / "labels.csv", newline="") as handle:
        return {row["filepath"]: row["label"] for row in csv.DictReader(handle)}


@pytest.fixture(scope="session")
def tiny_detector_path() -> Path:
    """A YOLOv5n checkpoint with random weights, saved like MDv5 and loadable by megadetector."""
    path = MODEL_CACHE / "tiny_md_v5.pt"
    if not path.is_file():
        make_yolov5_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real Redis for this test session.

    ``TEST_REDIS_URL`` uses an existing server (its DB is flushed!); otherwise a private
    ``redis-server`` is started on a free loopback port, so parallel runs never share state.
    """
    external = os.environ.get("TEST_REDIS_URL")
    if external:
        yield external
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/test.sh (it installs it) or set TEST_REDIS_URL")
    server = RedisServer(tmp_path_factory.mktemp("redis"), binary).start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's Redis, flushed before and after the test."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    yield redis_server
    client.flushdb()


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)
