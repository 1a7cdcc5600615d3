"""The ``camtrap`` command: ``camtrap serve`` here, more subcommands registered from other modules.

Adding a subcommand: in a module, define ``COMMANDS = [Command(name, help, add_arguments, run)]``
(``add_arguments(parser)`` adds its flags, ``run(args)`` does the work and returns the exit status,
as torchvision pairs ``get_args_parser`` with ``main(args)``), and list the module in
:data:`COMMAND_MODULES`. Modules are imported by name when the command line is built, so
``backend`` never imports ``trainer`` at import time; a module that is not installed is skipped.
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
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis

from backend.config import DEFAULT_REDIS_URL, Settings, get_settings
from backend.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Modules whose ``COMMANDS`` list is added to ``camtrap`` after this module's own.
COMMAND_MODULES = ("trainer.cli",)
#: Seconds to wait for a locally started redis-server to answer.
REDIS_START_TIMEOUT_S = 10.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class Command:
    """One ``camtrap`` subcommand."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --- camtrap serve --------------------------------------------------------------------------------


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
    """Check the detector and Redis, then run uvicorn on the ``backend.app:create_app`` factory."""
    import uvicorn

    from backend.detector import resolve_model_file

    settings = get_settings()
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


COMMANDS = [Command("serve", "run the Label Studio ML backend (uvicorn)", add_serve_arguments, run_serve)]


# --- the command line ---------------------------------------------------------------------------


def all_commands() -> list[Command]:
    """This module's commands, then those of every installed module in :data:`COMMAND_MODULES`."""
    commands = list(COMMANDS)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                logger.debug("camtrap: %s is not installed; its commands are unavailable", name)
                continue
            raise
        commands += getattr(module, "COMMANDS", [])
    return commands


def get_args_parser(
    commands: Sequence[Command], add_help: bool = True, prog: str = "camtrap"
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Camtrap ML backend", add_help=add_help)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in commands:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def run_commands(commands: Sequence[Command], argv: Sequence[str] | None = None, prog: str = "camtrap") -> int:
    """Parse ``argv`` against ``commands`` and run the chosen one (help and exit code 2 when none)."""
    logging.basicConfig(level=get_settings().log_level.upper(), format=LOG_FORMAT)
    parser = get_args_parser(commands, prog=prog)
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.run(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``camtrap`` console script."""
    return run_commands(all_commands(), argv)


if __name__ == "__main__":
    sys.exit(main())
