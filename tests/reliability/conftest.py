"""The reliability tests reuse the service-test fixtures (real app over HTTP, fake Label Studio, tiny detector)
and the learning tests' (the fake ENA24 project over HTTP, the data dir and settings a worker shares)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backend.conftest import detector, fake_ls, image_dir, label_config, settings_factory  # noqa: F401
from tests.learning.conftest import data_dir, ena24_ls, settings, worker_env  # noqa: F401
from tests.reliability.small_disk import mounted_tmpfs

#: The small disk's size: a test bundle (mobilenet_v3_small, ~6 MB) fits, two do not.
SMALL_DISK_BYTES = 16 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs mounted as ``settings_factory``'s DATA_DIR (``tmp_path/data``), unmounted after the test."""
    with mounted_tmpfs(tmp_path / "data", SMALL_DISK_BYTES) as disk:
        yield disk
