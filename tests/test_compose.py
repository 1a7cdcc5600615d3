"""docker-compose.yml and docker/ are checked here, since no Docker engine runs on this machine.

- The file parses, has the four services, and wires them by env: the backend and worker read only
  variables our settings know, Label Studio gets the SSRF variables and the bootstrap API key.
- The commands are the ones the end-to-end suite runs (``camtrap serve``, ``camtrap worker training
  prelabel``), with the Label Studio variables the e2e fixtures give their LS.
- Redis persists (append-only), the worker reserves a GPU (and docker/compose.cpu.yml drops it),
  backend and worker share the model volume.
- ``docker compose config`` (or the older ``docker-compose config``) accepts the file, when one of
  them is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.config import Settings
from tests.e2e.conftest import SERVICE_ENV, backend_argv, label_studio_env, service_env, worker_argv

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
CPU_OVERRIDE = REPO_ROOT / "docker" / "compose.cpu.yml"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / "docker" / "Dockerfile.dockerignore"
ENV_EXAMPLE = REPO_ROOT / "docker" / "env.example"

SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
#: Variables every backend and worker container must receive (the design's contract names).
CONTRACT_ENV = {
    "LABEL_STUDIO_URL",
    "LABEL_STUDIO_API_KEY",
    "REDIS_URL",
    "DATA_DIR",
    "DETECTOR_MODEL",
    "TRAIN_EVERY_N_ANNOTATIONS",
    "BASIC_AUTH_USER",
    "BASIC_AUTH_PASS",
    "WEBHOOK_SECRET",
}
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")


class _ComposeLoader(yaml.SafeLoader):
    """PyYAML plus Compose's ``!reset`` and ``!override`` tags."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: {"!reset": True})
_ComposeLoader.add_constructor("!override", lambda loader, node: loader.construct_mapping(node))


def load(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_ComposeLoader)  # a SafeLoader subclass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` on strings, recursively."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = env.get(name, "")
        if op in (":-", "-"):
            return current or arg
        if op in (":?", "?") and not current:
            raise KeyError(f"{name}: {arg}")
        return current

    return _VARIABLE.sub(replace, value)


def example_env() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line and line[0] != "#")
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load(COMPOSE_FILE)


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The file as Compose sees it with docker/env.example as the .env file."""
    return interpolate(raw, example_env())


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_four_services_wired_by_name(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"label-studio", "backend", "worker", "redis"}
    for name in ("backend", "worker"):
        env = environment(services[name])
        assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080", f"{name}: {env['LABEL_STUDIO_URL']}"
        assert env["REDIS_URL"] == "redis://redis:6379/0", f"{name}: {env['REDIS_URL']}"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
    assert services["label-studio"]["image"].startswith("heartexlabs/label-studio:1.23"), "official LS 1.23 image"
    assert services["redis"]["image"].startswith("redis:7"), services["redis"]["image"]


def test_backend_and_worker_read_only_known_settings(compose: dict[str, Any]) -> None:
    for name in ("backend", "worker"):
        env = environment(compose["services"][name])
        unknown = set(env) - SETTINGS_ENV
        assert not unknown, f"{name} sets variables no setting reads (typo?): {sorted(unknown)}"
        missing = CONTRACT_ENV - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
    backend = environment(compose["services"]["backend"])
    assert backend["HOST"] == "0.0.0.0", "the backend must listen outside its container"


def test_label_studio_allows_the_backend_and_shares_the_api_key(compose: dict[str, Any]) -> None:
    ls = environment(compose["services"]["label-studio"])
    assert ls["ML_BLOCK_LOCAL_IP"] == "false" and ls["SSRF_PROTECTION_ENABLED"] == "false", ls
    api_key = environment(compose["services"]["backend"])["LABEL_STUDIO_API_KEY"]
    assert ls["LABEL_STUDIO_USER_TOKEN"] == api_key, "LS must create the admin with the backend's API key"
    assert ls["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true", "a bootstrap legacy token needs legacy tokens on"
    assert any(v.endswith(":/label-studio/data") for v in compose["services"]["label-studio"]["volumes"])


def test_label_studio_env_is_what_the_e2e_suite_gives_its_label_studio(compose: dict[str, Any], tmp_path: Path) -> None:
    from tests.e2e.conftest import LabelStudioInstall

    install = LabelStudioInstall(tmp_path, tmp_path / "label-studio", tmp_path / "db.sqlite3", "1.23.2")
    e2e = label_studio_env(install, tmp_path, tmp_path, "http://127.0.0.1:8080", legacy_token="0" * 40)
    ls = environment(compose["services"]["label-studio"])
    assert set(ls) <= set(e2e), f"compose sets LS variables the e2e suite never tries: {sorted(set(ls) - set(e2e))}"
    for name in ("ML_BLOCK_LOCAL_IP", "SSRF_PROTECTION_ENABLED", "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"):
        assert ls[name] == e2e[name], f"{name}: compose {ls[name]!r}, e2e {e2e[name]!r}"


def test_commands_are_the_ones_the_e2e_suite_runs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    backend = backend_argv(9090)
    if Path(backend[0]).name == "camtrap":
        assert services["backend"]["command"] == ["camtrap", *backend[1:]]
    else:  # the CLI has not landed: the e2e suite runs uvicorn on the same factory
        assert services["backend"]["command"][0] == "camtrap"
    worker = worker_argv("name")
    expected = ["camtrap", *worker[1 : worker.index("--name")]]
    assert services["worker"]["command"] == expected, f"compose: {services['worker']['command']}, e2e: {expected}"
    assert services["worker"]["working_dir"] == "/app", "RQ imports jobs by dotted name from the code root"
    # The e2e services get the same variables (plus their tiny-training knobs).
    e2e = service_env(
        redis_url="redis://x",
        data_dir=Path("/d"),
        ls_url="http://ls",
        api_key="k",
        detector=Path("/m.pt"),
        port=1,
        basic_auth=("u", "p"),
        webhook_secret="s",
    )
    assert set(environment(services["worker"])) <= set(e2e), "compose sets worker variables the e2e suite lacks"
    assert set(SERVICE_ENV) - {"OMP_NUM_THREADS"} <= SETTINGS_ENV, "e2e knobs must be real settings"


def test_redis_is_persistent(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server" and command[command.index("--appendonly") + 1] == "yes", command
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"]), redis["volumes"]
    assert redis["volumes"][0].split(":")[0] in compose["volumes"], "Redis data must be a named volume"


def test_worker_reserves_a_gpu_and_the_cpu_override_drops_it(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], device
    assert worker["build"]["args"]["TORCH_FLAVOR"] == "cuda"
    override = load(CPU_OVERRIDE)
    assert override["services"]["worker"]["deploy"] == {"!reset": True}, "compose.cpu.yml must reset deploy"


def test_backend_and_worker_share_models_and_data(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("backend", "worker"):
        data_dir = environment(services[name])["DATA_DIR"]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert mounts.get(data_dir) and mounts.get(f"{data_dir}/models"), f"{name}: {services[name]['volumes']}"
        assert all(volume in compose["volumes"] for volume in mounts.values()), f"{name}: undeclared volume"
    assert services["backend"]["volumes"] == services["worker"]["volumes"]


def test_images_build_from_the_dockerfile(compose: dict[str, Any]) -> None:
    text = DOCKERFILE.read_text()
    flavours = set(re.findall(r"^\s+(\w+)\)\s", text, re.MULTILINE))
    assert {"cpu", "cuda"} <= flavours, f"Dockerfile flavours: {flavours}"
    for name in ("backend", "worker"):
        build = compose["services"][name]["build"]
        assert (REPO_ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE, build
        assert build["args"]["TORCH_FLAVOR"] in flavours
    kept = {line.strip()[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.strip().startswith("!")}
    for source in re.findall(r"^COPY (?!--)(.+) \S+$", text, re.MULTILINE):
        for item in source.split():
            assert (REPO_ROOT / item).exists(), f"Dockerfile copies {item}, which does not exist"
            assert item in kept, f"{item} is excluded from the build context by {DOCKERIGNORE.name}"


def test_env_example_sets_every_required_variable(raw: dict[str, Any]) -> None:
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE_FILE.read_text()))
    assert required, "the compose file should require the admin and the API key"
    assert required <= set(example_env()), f"docker/env.example lacks {sorted(required - set(example_env()))}"
    with pytest.raises(KeyError, match="LABEL_STUDIO_API_KEY"):
        interpolate(raw, {k: v for k, v in example_env().items() if k != "LABEL_STUDIO_API_KEY"})


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_cli_accepts_the_file(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose)")
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    done = subprocess.run(
        [*cli, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert done.returncode == 0, f"{' '.join(cli)} config rejected docker-compose.yml:\n{done.stderr}"
