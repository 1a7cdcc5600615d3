"""The ``camtrap`` command: ``camtrap <command> [options]``.

Subcommands are listed in :data:`COMMANDS` as ``name -> (help, "module:function")``; the function
takes the remaining arguments (``argv``) and returns the exit status, in the torchvision style
(``get_*_parser(add_help)`` + ``*_main(argv)``). Adding one is one line in that dict. The module is
imported only when its command runs, so ``backend`` never imports ``trainer`` at import time.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

import redis

from backend.config import DEFAULT_REDIS_URL, Settings, get_settings
from backend.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: ``camtrap`` subcommands: name -> (one-line help, "module:function(argv) -> exit status").
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("run the Label Studio ML backend (uvicorn)", "backend.cli:serve_main"),
    "worker": ("run the RQ worker that trains classifiers", "trainer.cli:worker_main"),
    "train": ("train a project's species classifier now, in this process", "trainer.cli:train_main"),
}
#: Seconds to wait for a locally started redis-server to answer.
REDIS_START_TIMEOUT_S = 10.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# --- camtrap serve --------------------------------------------------------------------------------


def get_serve_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Flags of ``serve``; each default comes from the environment (see the README)."""
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="camtrap serve", description="Run the Label Studio ML backend.", add_help=add_help
    )
    parser.add_argument("--host", default=settings.host, help=f"bind address (default: HOST, {settings.host})")
    parser.add_argument("--port", type=int, default=settings.port, help=f"port (default: PORT, {settings.port})")
    parser.add_argument(
        "--workers",
        type=int,
        default=settings.workers,
        help=f"uvicorn worker processes, each loads its own detector (default: WORKERS, {settings.workers})",
    )
    return parser


def serve_main(argv: Sequence[str] | None = None) -> int:
    """Check the detector and Redis, then run uvicorn on the ``backend.app:create_app`` factory."""
    import uvicorn

    from backend.detector import resolve_model_file

    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    args = get_serve_parser().parse_args(argv)
    try:
        resolve_model_file(settings.detector_model)
        with local_redis(settings):
            uvicorn.run(
                "backend.app:create_app",
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
    if settings.redis_url or _answers(url):
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


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.3, socket_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def _wait_for(process: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while not _answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            raise ConfigurationError(
                f"the local redis-server did not start (exit status {process.poll()}); see DATA_DIR/redis/redis.log"
            )
        time.sleep(0.1)


# --- dispatch -----------------------------------------------------------------------------------


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {help_text}" for name, (help_text, _) in COMMANDS.items()]
    return "usage: camtrap COMMAND [options]   (camtrap COMMAND --help lists them)\n\ncommands:\n" + "\n".join(lines)


def resolve(target: str) -> Callable[[Sequence[str]], int]:
    """Import ``"module:function"``."""
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``camtrap`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stderr.write(usage() + "\n")
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        sys.stderr.write(f"camtrap: unknown command {argv[0]!r}\n\n{usage()}\n")
        return 2
    return int(resolve(COMMANDS[argv[0]][1])(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
