"""Settings come from the environment, once, with documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import DEFAULT_REDIS_URL, Settings
from backend.contracts.projects import project_id


def test_settings_defaults_point_at_local_services(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "DATA_DIR", "DETECTOR_MODEL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.effective_redis_url == DEFAULT_REDIS_URL
    assert settings.models_dir == Path("data/models")
    assert settings.detector_model == "MDV5A"


def test_settings_parse_comma_separated_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_IMAGE_HOSTS", "images.example.org, cdn.example.org")
    monkeypatch.setenv("LOCATION_FIELDS", "camera_id")
    settings = Settings()
    assert settings.allowed_image_hosts == ["images.example.org", "cdn.example.org"]
    assert settings.location_fields == ["camera_id"]


def test_settings_reject_threshold_outside_unit_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOW_THRESHOLD", "1.5")
    with pytest.raises(ValueError, match="show_threshold"):
        Settings()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("7.1714557000", "7", id="setup-string"),
        pytest.param(7, "7", id="int"),
        pytest.param({"id": 12, "title": "x"}, "12", id="webhook-dict"),
    ],
)
def test_project_id_accepts_every_form_label_studio_sends(value: object, expected: str) -> None:
    assert project_id(value) == expected


@pytest.mark.parametrize("value", [None, {"title": "no id"}, "../etc", True])
def test_project_id_rejects_unusable_values(value: object) -> None:
    with pytest.raises(ValueError):
        project_id(value)
