"""create_app: start-up with the real loader, refusal to start, error bodies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError

import pytest
from fastapi.testclient import TestClient

from backend.config import Settings
from backend.errors import ConfigurationError
from backend.service.app import create_app
from backend.vision.detector import Detector


def test_app_loads_detector_from_detector_model_at_startup(
    settings_factory: Callable[..., Settings], tiny_detector_path: Path
) -> None:
    settings = settings_factory().model_copy(update={"detector_model": str(tiny_detector_path)})
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").json()["model_version"] == "md_tiny_md_v5+none"
        assert client.app.state.runtime.detector.model_name == settings.detector_model


@pytest.mark.parametrize(
    ("model", "message"),
    [
        pytest.param("/nowhere/md_v5a.0.0.pt", "does not exist", id="missing-file"),
        pytest.param("NOT_A_MODEL", "neither a known MegaDetector name", id="unknown-name"),
    ],
)
def test_app_refuses_to_start_without_detector(
    settings_factory: Callable[..., Settings], model: str, message: str
) -> None:
    with (
        pytest.raises(ConfigurationError, match=message),
        TestClient(create_app(settings_factory(detector_model=model))),
    ):
        pass


def test_app_refuses_to_start_when_named_model_cannot_download_and_fallback_is_none(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    import megadetector.detection.run_detector as run_detector

    def offline(*args: object, **kwargs: object) -> str:
        raise URLError("Name or service not known")

    monkeypatch.setattr(run_detector, "try_download_known_detector", offline)
    with pytest.raises(ConfigurationError, match="set DETECTOR_MODEL to a local .pt file, or run once with internet"):
        with TestClient(create_app(settings_factory(detector_model="MDV5A", detector_fallback="none"))):
            pass


def test_unexpected_error_body_has_no_traceback(settings_factory: Callable[..., Settings], detector: Detector) -> None:
    app = create_app(settings_factory(), detector=detector)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("internal secret detail")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; the backend's log has the details"}
