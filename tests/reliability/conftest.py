"""The reliability tests reuse the service-test fixtures (real app over HTTP, fake Label Studio, tiny detector)."""

from tests.backend.conftest import detector, fake_ls, image_dir, label_config, settings_factory  # noqa: F401
