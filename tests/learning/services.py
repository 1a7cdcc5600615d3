"""Real processes for the learning tests: ``rq worker`` and ``uvicorn --workers 2``, stopped by their PID.

Each service starts in its own session (process group = the leader's PID), so stopping it reaches
uvicorn's worker processes too. RQ's work horse puts itself in a group of its own: it is found by
the PID the job records in its meta, and signalled by that PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import httpx
import redis
from rq import Worker

from tests.processes import ManagedProcess, wait_until
from tests.trainer.fake_label_studio import TOKEN

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

#: A tiny, fast training run (the CPU is small and shared), configured as an operator would: by env.
#: Two epochs on 21 photos learn nothing, and these tests are about jobs and swaps, not the gate
#: (tests/trainer/test_gate.py): any comparable model is promoted (PROMOTION_MIN_GAIN -1) and one test
#: crop per species is enough to compare.
TINY_TRAINING_ENV = {
    "PROMOTION_MIN_GAIN": "-1",
    "GATE_MIN_TEST_PER_CLASS": "1",
    "TRAIN_BACKBONE": "mobilenet_v3_small",
    "TRAIN_IMAGE_SIZE": "64",
    "TRAIN_EPOCHS": "2",
    "TRAIN_BATCH_SIZE": "8",
    "TRAIN_NUM_WORKERS": "0",
    "TRAIN_PATIENCE": "5",
    "MIN_EXAMPLES_PER_CLASS": "2",
    "DOWNLOAD_CONCURRENCY": "2",
    "MODEL_POLL_INTERVAL_S": "1",
    "LOG_LEVEL": "INFO",
    "OMP_NUM_THREADS": "1",
}

#: uvicorn logging with the process id and the epoch time on every line, to tell the backend's worker
#: processes apart and time their swaps: ``<pid> <unix time> <logger> <level> <message>``.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"pid": {"format": "%(process)d %(created).3f %(name)s %(levelname)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "pid", "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
}


def service_env(redis_url: str, data_dir: Path, detector: Path, ls_url: str, **extra: str) -> dict[str, str]:
    """The environment of the worker and the backend (everything else inherited from this process)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATA_DIR", "LABEL_STUDIO_URL")}
    env.update(TINY_TRAINING_ENV)
    env.update(
        REDIS_URL=redis_url,
        DATA_DIR=str(data_dir),
        DETECTOR_MODEL=str(detector),
        LABEL_STUDIO_URL=ls_url,
        LABEL_STUDIO_API_KEY=TOKEN,
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env


class Service(ManagedProcess):
    """A :class:`ManagedProcess` started at once from the repo root, which a test can also crash."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        super().__init__(name, argv, env, REPO_ROOT, log_path)
        self.start()

    def kill(self) -> None:
        """SIGKILL the leader only (a crash of that one process)."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self._proc.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


#: The two ways to run the worker: plain RQ (as the README and compose do) and ours (training code preloaded).
WORKER_COMMANDS = {
    "rq": lambda env: [str(VENV_BIN / "rq"), "worker", "training", "prelabel", "--url", env["REDIS_URL"]],
    "camtrap": lambda env: [str(VENV_BIN / "python"), "-m", "trainer", "worker"],
}


def start_rq_worker(env: Mapping[str, str], log_path: Path, connection: redis.Redis, kind: str = "camtrap") -> Service:
    """A worker on queues training and prelabel, from the repository root; ``kind`` picks the command.

    ``rq`` is ``rq worker training prelabel --url $REDIS_URL``; ``camtrap`` is ``python -m trainer worker``
    (``camtrap worker``), which imports torch once instead of once per job: faster tests on a small CPU.
    """
    before = {w.name for w in Worker.all(connection=connection)}
    service = Service("worker", WORKER_COMMANDS[kind](env), env, log_path)

    def registered() -> bool:
        if not service.alive():
            raise AssertionError(f"rq worker exited:\n{service.log()[-3000:]}")
        return bool({w.name for w in Worker.all(connection=connection)} - before)

    wait_until(registered, timeout=60, what="the rq worker to register", interval=0.1, errors="raise")
    return service


def swap_times(log: str, project: str, model_version: str) -> dict[int, float]:
    """When each backend process (pid) first logged serving ``model_version`` for ``project`` (unix time)."""
    logger = re.escape("backend.service.slots")
    line = rf"^(\d+) ([\d.]+) {logger} INFO project {re.escape(project)} now serves {re.escape(model_version)}$"
    times: dict[int, float] = {}
    for pid, created in re.findall(line, log, re.M):
        times.setdefault(int(pid), float(created))
    return times


def start_backend(
    env: Mapping[str, str],
    log_path: Path,
    port: int,
    workers: int = 2,
    command: Literal["uvicorn", "camtrap"] = "uvicorn",
) -> Service:
    """The backend with ``workers`` processes, waiting until it answers /health and every process started.

    ``uvicorn``: ``uvicorn backend.service.app:create_app --factory --workers N`` with :data:`LOG_CONFIG` (pid on
    every line). ``camtrap``: ``python -m backend.cli serve --workers N``, as an operator runs it (its own logging).
    """
    if command == "camtrap":
        argv = [str(VENV_BIN / "python"), "-m", "backend.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--workers", str(workers)]
    else:
        config = log_path.with_suffix(".logging.json")
        config.write_text(json.dumps(LOG_CONFIG))
        argv = [str(VENV_BIN / "uvicorn"), "backend.service.app:create_app", "--factory", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--workers", str(workers), "--log-config", str(config)]
    service = Service("backend", argv, env, log_path)

    def healthy() -> bool:
        if not service.alive():
            raise AssertionError(f"backend exited:\n{service.log()[-3000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=120, what="the backend to answer /health", interval=0.3, errors="raise")
    wait_until(
        lambda: service.log().count("Application startup complete") >= workers,
        timeout=120,
        what=f"{workers} backend workers to start",
        interval=0.1,
        errors="raise",
    )
    return service
