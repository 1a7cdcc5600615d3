"""Fixtures of the backend tests: one loaded tiny detector, a fake Label Studio, running apps, bundles."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from backend.config import Settings
from backend.service.app import create_app
from backend.vision.detector import Detector
from tests.backend.fake_ls import LEGACY_TOKEN, FakeLabelStudio, serve_in_thread
from tests.conftest import REPO_ROOT

#: Photos of the shared set used by the route tests.
PHOTOS = ["2480.jpg", "352.jpg", "596.jpg"]
#: Pixel limit of the test apps: the ENA24 photos (1920x1080) pass, ``huge.png`` does not.
TEST_MAX_PIXELS = 4_000_000


@pytest.fixture(scope="session")
def label_config() -> str:
    return (REPO_ROOT / "label_config.xml").read_text()


@pytest.fixture(scope="session")
def detector(tiny_detector_path: Path) -> Detector:
    """The tiny checkpoint through the real megadetector loader, shared by every test app."""
    return Detector.load(Settings(detector_model=str(tiny_detector_path), detector_device="cpu", detector_batch_size=4))


@pytest.fixture(scope="session")
def mdlite_detector() -> Detector:
    """MegadetectorLite's real weights (DETECTOR_MODEL=mdlite; fetched into the user cache on the first run)."""
    return Detector.load(Settings(detector_model="mdlite", detector_device="cpu", detector_batch_size=4))


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory, ena24_dir: Path) -> Path:
    """ENA24 photos plus broken files: truncated, not an image, too many pixels."""
    directory = tmp_path_factory.mktemp("ls-media")
    for name in PHOTOS:
        shutil.copy(ena24_dir / name, directory / name)
    photo = (ena24_dir / PHOTOS[0]).read_bytes()
    (directory / "truncated.jpg").write_bytes(photo[: len(photo) // 3])
    (directory / "notimage.jpg").write_bytes(b"<html><body>Login required</body></html>")
    buffer = io.BytesIO()
    Image.new("RGB", (2100, 2100), (30, 90, 30)).save(buffer, "PNG")
    (directory / "huge.png").write_bytes(buffer.getvalue())
    return directory


@pytest.fixture(scope="session")
def fake_ls(image_dir: Path) -> Iterator[tuple[FakeLabelStudio, str]]:
    fake = FakeLabelStudio(image_dir)
    with serve_in_thread(fake.app()) as url:
        yield fake, url


def make_settings(data_dir: Path, ls_url: str | None, redis_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "label_studio_url": ls_url,
        "label_studio_api_key": LEGACY_TOKEN,
        "redis_url": redis_url,
        "detector_batch_size": 4,
        "max_image_pixels": TEST_MAX_PIXELS,
        "model_poll_interval_s": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def running_app(settings: Settings, detector: Detector | None) -> Iterator[str]:
    """The app under uvicorn on loopback (real HTTP, lifespan on); yields its base URL."""
    with serve_in_thread(create_app(settings, detector=detector)) as url:
        yield url


@pytest.fixture
def settings_factory(tmp_path: Path, fake_ls: tuple, redis_url: str) -> Callable[..., Settings]:
    def factory(**overrides: object) -> Settings:
        return make_settings(tmp_path / "data", fake_ls[1], redis_url, **overrides)

    return factory
