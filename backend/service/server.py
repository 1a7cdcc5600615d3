"""``camtrap serve``: check the detector, make sure a Redis answers, run uvicorn on the app factory."""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from backend.commands import Command
from backend.config import DEFAULT_REDIS_URL, Settings, get_settings
from backend.contracts.redis_client import answers
from backend.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Seconds to wait for a locally started redis-server to answer.
REDIS_START_TIMEOUT_S = 10.0


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``serve``; each default comes from the environment (see the README)."""
    settings = get_settings()
    parser.add_argument("--host", default=settings.host, help=f"bind address (default: HOST, {settings.host})")
    parser.add_argument("--port", type=int, default=settings.port, help=f"port (default: PORT, {settings.port})")
    parser.add_argument(
        "--workers",
        type=int,
        default=settings.workers,
        help=f"uvicorn worker processes, each loads its own detector (default: WORKERS, {settings.workers})",
    )


def run_serve(args: argparse.Namespace) -> int:
    """Check the detector and Redis, then run uvicorn on the ``backend.service.app:create_app`` factory."""
    import uvicorn

    from backend.vision.detector import resolve_model_file

    settings = get_settings()
    try:
        resolve_model_file(settings.detector_model)
        with local_redis(settings):
            uvicorn.run(
                "backend.service.app:create_app",
                factory=True,
                host=args.host,
                port=args.port,
                workers=args.workers,
                log_level=settings.log_level.lower(),
            )
    except ConfigurationError as exc:
        logger.error("%s", exc)
        return 2
    return 0


@contextmanager
def local_redis(settings: Settings, url: str = DEFAULT_REDIS_URL) -> Iterator[None]:
    """Start a loopback ``redis-server`` under ``DATA_DIR/redis`` when REDIS_URL is unset and none answers.

    Args:
        settings: REDIS_URL and DATA_DIR.
        url: The loopback address the backend uses when REDIS_URL is unset.

    Raises:
        ConfigurationError: a server is needed but ``redis-server`` is not installed or does not start.
    """
    if settings.redis_url or answers(url):
        yield
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise ConfigurationError(
            f"REDIS_URL is unset, nothing answers on {url} and redis-server is not installed: install it "
            "(apt-get install redis-server, or brew install redis) or set REDIS_URL to a running Redis"
        )
    directory = (settings.data_dir / "redis").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    port = urlsplit(url).port or 6379
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory), "--appendonly", "yes"]
    command += ["--logfile", str(directory / "redis.log")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_for(process, url)
        logger.info(
            "REDIS_URL is unset and nothing answered on 127.0.0.1:%s: started redis-server (pid %d) with its data "
            "in %s; set REDIS_URL to use your own Redis",
            port,
            process.pid,
            directory,
        )
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_for(process: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while not answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            raise ConfigurationError(
                f"the local redis-server did not start (exit status {process.poll()}); see DATA_DIR/redis/redis.log"
            )
        time.sleep(0.1)


COMMANDS = [Command("serve", "run the Label Studio ML backend (uvicorn)", add_serve_arguments, run_serve)]
