"""The reliability tests reuse the service-test fixtures (real app over HTTP, fake Label Studio, tiny detector)
and the learning tests' (the fake ENA24 project over HTTP, the data dir and settings a worker shares)."""

from tests.backend.conftest import detector, fake_ls, image_dir, label_config, settings_factory  # noqa: F401
from tests.learning.conftest import data_dir, ena24_ls, settings, worker_env  # noqa: F401
