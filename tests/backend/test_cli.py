"""The camtrap command: dispatch, serve's checks, the local Redis it starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from backend import cli
from backend.commands import Command
from backend.config import Settings, get_settings
from backend.errors import ConfigurationError
from backend.service import server
from tests.conftest import REPO_ROOT
from tests.processes import free_port


def test_main_without_command_prints_help(capsys: pytest.CaptureFixture) -> None:
    assert cli.main([]) == 2
    assert "serve" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "status"), [pytest.param(["--help"], 0, id="help"), pytest.param(["nope"], 2, id="unknown-command")]
)
def test_main_exits_through_argparse(argv: list[str], status: int) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == status


def test_all_commands_include_serve_and_registered_modules() -> None:
    names = [command.name for command in cli.all_commands()]
    assert names[0] == "serve" and len(names) == len(set(names))


def test_registered_command_is_dispatched(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def add(parser) -> None:  # noqa: ANN001
        parser.add_argument("--flag", default="x")

    extra = Command("hello", "say hello", add, lambda args: seen.append(args.flag) or 3)
    monkeypatch.setattr(server, "COMMANDS", [*server.COMMANDS, extra])
    assert cli.main(["hello", "--flag", "y"]) == 3
    assert seen == ["y"]


def test_serve_refuses_missing_detector_with_one_sentence(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DETECTOR_MODEL", "/nowhere/md.pt")
    # serve switches prometheus-client to multiprocess mode for the whole process: not in pytest's, where
    # the counters other tests read were created in single-process mode (their /metrics would go stale)
    switched: list[Path] = []
    monkeypatch.setattr(cli, "enable_multiprocess", switched.append)
    get_settings.cache_clear()
    try:
        assert cli.main(["serve"]) == 2
    finally:
        get_settings.cache_clear()
    assert "DETECTOR_MODEL=/nowhere/md.pt does not exist" in caplog.text
    assert len(switched) == 1, "serve asks for multiprocess metrics"


def test_local_redis_starts_and_stops_server(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with server.local_redis(Settings(data_dir=tmp_path), url=url):
        assert redis.Redis.from_url(url).ping()
        assert (tmp_path / "redis").is_dir()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()


def test_local_redis_is_not_started_when_redis_url_is_set(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with server.local_redis(Settings(data_dir=tmp_path, redis_url="redis://example:6379/0"), url=url):
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()


def test_local_redis_says_how_to_install_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server.shutil, "which", lambda name: None)
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(ConfigurationError, match="apt-get install redis-server"):
        with server.local_redis(Settings(data_dir=tmp_path), url=url):
            pass


def test_camtrap_serve_answers_health(tmp_path: Path, tiny_detector_path: Path, redis_url: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DETECTOR_MODEL": str(tiny_detector_path),
        "REDIS_URL": redis_url,
        "DATA_DIR": str(tmp_path),
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "serve"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "camtrap serve exited"
                assert time.monotonic() < deadline, "camtrap serve did not answer in 90 s"
                time.sleep(0.2)
        assert response.json()["model_version"] == "md_tiny_md_v5+none"
    finally:
        process.terminate()
        process.wait(20)
