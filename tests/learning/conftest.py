"""Fixtures of the learning tests: real Redis, real ``rq worker`` processes, a fake Label Studio.

The shared ENA24 photos have species labels but no boxes: the fake project gives each photo a box
over its central 80 % and a location (``site-0``..``site-2``, each species at every site). The
hot-swap test also labels two photos at image level only (their crop is the top box of the tiny
generated MegaDetector).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from backend.config import Settings
from backend.service.app import create_app
from tests.backend.fake_ls import serve_in_thread
from tests.learning.services import Service, service_env, start_rq_worker
from tests.processes import RedisServer
from tests.trainer.fake_label_studio import TOKEN, FakeProject, ena24_project

#: Project id of the ENA24 project in the fake Label Studio.
ENA24_PROJECT = "1"
#: Credentials of the in-thread app (``app_url``).
SECRET = "webhook-secret"
BASIC = ("labelstudio", "basic-pass")


@pytest.fixture
def ena24_ls(ena24_dir: Path, ena24_labels: dict[str, str]) -> Iterator[tuple[FakeProject, str]]:
    fake = ena24_project(ena24_dir, ena24_labels, project=int(ENA24_PROJECT))
    with serve_in_thread(fake.app()) as url:
        yield fake, url


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def worker_env(redis_url: str, data_dir: Path, tiny_detector_path: Path, ena24_ls) -> dict[str, str]:
    return service_env(redis_url, data_dir, tiny_detector_path, ena24_ls[1])


@pytest.fixture
def settings(worker_env: dict[str, str], data_dir: Path) -> Settings:
    """The settings the backend side uses to enqueue (same Redis and data dir as the worker)."""
    return Settings(
        redis_url=worker_env["REDIS_URL"],
        data_dir=data_dir,
        label_studio_url=worker_env["LABEL_STUDIO_URL"],
        label_studio_api_key=TOKEN,
    )


@pytest.fixture
def rq_worker(worker_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis) -> Iterator[Service]:
    service = start_rq_worker(worker_env, tmp_path / "worker.log", redis_client)
    yield service
    service.stop()


@pytest.fixture(scope="package")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server the tests may stop, restart and freeze."""
    server = RedisServer(tmp_path_factory.mktemp("own-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def app_settings(own_redis: RedisServer, tiny_detector_path: Path, tmp_path_factory) -> Settings:
    return Settings(
        redis_url=own_redis.url,
        data_dir=tmp_path_factory.mktemp("app-data"),
        detector_model=str(tiny_detector_path),
        webhook_secret=SECRET,
        basic_auth_user=BASIC[0],
        basic_auth_pass=BASIC[1],
        train_every_n_annotations=50,
    )


@pytest.fixture(scope="package")
def app_url(app_settings: Settings) -> Iterator[str]:
    """The real app (tiny detector, basic auth, webhook secret) served by uvicorn in a thread."""
    with serve_in_thread(create_app(app_settings), timeout_s=120) as url:
        yield url
