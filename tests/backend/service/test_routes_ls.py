"""The Label Studio protocol over real HTTP (uvicorn on loopback): /health, /setup, /predict, /metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from label_studio_sdk.label_interface import LabelInterface
from PIL import Image, ImageOps

from backend.config import Settings
from backend.contracts.keys import RedisKeys
from backend.vision.detector import Detector
from tests.backend.conftest import PHOTOS, running_app
from tests.backend.fake_ls import FakeLabelStudio
from tests.processes import free_port

PROJECT = "3.1714557000"


def tasks_for(*names: str) -> list[dict]:
    return [{"id": 100 + i, "data": {"image": f"/data/upload/3/{name}"}} for i, name in enumerate(names)]


def assert_valid(config: str, predictions: list[dict]) -> None:
    interface = LabelInterface(config)
    for prediction in predictions:
        assert interface.validate_prediction(prediction, return_errors=True) == []


def test_health_reports_status_and_model_version(settings_factory: Callable[..., Settings], detector: Detector) -> None:
    with running_app(settings_factory(), detector) as url:
        for path in ("/", "/health"):
            response = httpx.get(url + path)
            assert response.status_code == 200
            assert response.json() == {
                "status": "UP",
                "model_class": "CamtrapMegaDetector",
                "model_version": "md_tiny_md_v5+none",
                "detector": "md_tiny_md_v5",
                "detector_fallback": None,
            }


@pytest.mark.parametrize(
    ("extra_params", "boxes_shown"),
    [
        pytest.param(None, True, id="null"),
        pytest.param({"show_threshold": 0.9}, False, id="dict"),
        pytest.param('{"show_threshold": 0.9}', False, id="json-string"),
        pytest.param("show_threshold=0.9", False, id="key-value-string"),
        pytest.param({"show_threshold": 7}, True, id="out-of-range-ignored"),
    ],
)
def test_setup_extra_params_override_show_threshold(
    settings_factory: Callable[..., Settings],
    detector: Detector,
    label_config: str,
    redis_client: redis.Redis,
    extra_params: object,
    boxes_shown: bool,
) -> None:
    settings = settings_factory()
    with running_app(settings, detector) as url:
        started = time.perf_counter()
        response = httpx.post(
            f"{url}/setup",
            json={
                "project": PROJECT,
                "schema": label_config,
                "hostname": "http://localhost:8080",
                "access_token": "abc",
                "extra_params": extra_params,
            },
        )
        elapsed = time.perf_counter() - started
        predicted = httpx.post(
            f"{url}/predict", json={"tasks": tasks_for(PHOTOS[0]), "project": PROJECT}, timeout=120
        ).json()["results"][0]
    assert response.status_code == 200, response.text
    assert response.json() == {"model_version": "md_tiny_md_v5+none", "detector": "md_tiny_md_v5"}
    assert elapsed < 1.0
    stored = redis_client.hgetall(RedisKeys(settings.redis_prefix).setup("3"))
    assert stored[b"schema"].decode() == label_config
    assert any(r["type"] == "rectanglelabels" for r in predicted["result"]) is boxes_shown
    assert_valid(label_config, [predicted])


def test_setup_answers_fast_when_redis_is_down(tmp_path, fake_ls: tuple, detector: Detector, label_config: str) -> None:
    from tests.backend.conftest import make_settings

    settings = make_settings(tmp_path, fake_ls[1], f"redis://127.0.0.1:{free_port()}/0")
    with running_app(settings, detector) as url:
        started = time.perf_counter()
        response = httpx.post(f"{url}/setup", json={"project": PROJECT, "schema": label_config, "extra_params": None})
        assert response.status_code == 200
        assert time.perf_counter() - started < 1.5


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        pytest.param('<View><Text name="t" value="$text"/></View>', "no <Image>", id="no-image"),
        pytest.param('<View><Image name="i" value="$image"/></View>', "no <RectangleLabels>", id="no-rectangles"),
    ],
)
def test_setup_refuses_unsupported_config_with_sentence(
    settings_factory: Callable[..., Settings], detector: Detector, schema: str, message: str
) -> None:
    with running_app(settings_factory(), detector) as url:
        response = httpx.post(f"{url}/setup", json={"project": PROJECT, "schema": schema})
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize("path", [pytest.param("/setup", id="setup"), pytest.param("/predict", id="predict")])
def test_malformed_json_gets_422_with_message(
    settings_factory: Callable[..., Settings], detector: Detector, path: str
) -> None:
    with running_app(settings_factory(), detector) as url:
        response = httpx.post(url + path, content=b'{"tasks": [', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("malformed JSON body")


def test_predict_without_tasks_gets_422_naming_the_field(
    settings_factory: Callable[..., Settings], detector: Detector
) -> None:
    with running_app(settings_factory(), detector) as url:
        response = httpx.post(f"{url}/predict", json={"project": PROJECT})
    assert response.status_code == 422
    assert "tasks" in response.json()["detail"]


def test_predict_with_no_tasks_answers_no_results(
    settings_factory: Callable[..., Settings], detector: Detector
) -> None:
    with running_app(settings_factory(), detector) as url:
        response = httpx.post(f"{url}/predict", json={"tasks": []})
    assert response.status_code == 200 and response.json() == {"results": []}


def test_setup_without_schema_gets_422_naming_the_field(
    settings_factory: Callable[..., Settings], detector: Detector
) -> None:
    with running_app(settings_factory(), detector) as url:
        response = httpx.post(f"{url}/setup", json={})
        schema = httpx.get(f"{url}/openapi.json").json()
    assert response.status_code == 422
    assert response.json() == {"detail": "invalid request: schema: Field required"}
    assert "schema" in schema["components"]["schemas"]["SetupRequest"]["required"]


def test_predict_returns_valid_predictions_in_task_order(
    settings_factory: Callable[..., Settings], detector: Detector, label_config: str, ena24_dir: Path
) -> None:
    settings = settings_factory(default_project="3")
    with running_app(settings, detector) as url:
        version = httpx.post(f"{url}/setup", json={"project": PROJECT, "schema": label_config}).json()["model_version"]
        response = httpx.post(
            f"{url}/predict",
            json={"tasks": tasks_for(*PHOTOS), "project": PROJECT, "label_config": label_config},
            timeout=120,
        )
        health = httpx.get(f"{url}/health").json()
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == len(PHOTOS)
    assert_valid(label_config, results)
    assert {r["model_version"] for r in results} == {version} == {health["model_version"]}
    for name, prediction in zip(PHOTOS, results, strict=True):
        boxes = [r for r in prediction["result"] if r["type"] == "rectanglelabels"]
        assert boxes, "the tiny detector finds boxes on every photo"
        width, height = ImageOps.exif_transpose(Image.open(ena24_dir / name)).size
        assert all((r["original_width"], r["original_height"]) == (width, height) for r in boxes)
        assert all(r["score"] >= 0.2 for r in boxes)
        assert 0 <= prediction["score"] <= 1


@pytest.mark.parametrize(
    "reference",
    [
        pytest.param("/data/upload/3/missing.jpg", id="unreadable-404"),
        pytest.param("/data/upload/3/truncated.jpg", id="truncated"),
        pytest.param("/data/upload/3/notimage.jpg", id="non-image"),
        pytest.param("/data/upload/3/huge.png", id="oversized-pixels"),
        pytest.param("http://10.1.2.3/photo.jpg", id="private-address"),
        pytest.param("file:///etc/passwd", id="file-url"),
        pytest.param("", id="no-reference"),
    ],
)
def test_predict_fails_only_the_bad_task(
    settings_factory: Callable[..., Settings],
    detector: Detector,
    label_config: str,
    reference: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = tasks_for(PHOTOS[0], PHOTOS[1])
    tasks.insert(1, {"id": 7, "data": {"image": reference}})
    with running_app(settings_factory(), detector) as url:
        response = httpx.post(
            f"{url}/predict", json={"tasks": tasks, "project": PROJECT, "label_config": label_config}, timeout=120
        )
        metrics = httpx.get(f"{url}/metrics").text
    assert response.status_code == 200
    good, bad, other = response.json()["results"]
    assert bad == {"result": [], "score": None, "model_version": "md_tiny_md_v5+none"}
    for prediction in (good, other):
        assert any(r["type"] == "rectanglelabels" for r in prediction["result"])
    assert 'camtrap_tasks_total{outcome="failed",route="predict"} 1.0' in metrics
    assert "task 7: no prediction" in caplog.text


def test_health_and_setup_answer_fast_while_predict_runs(
    settings_factory: Callable[..., Settings], detector: Detector, label_config: str, fake_ls: tuple
) -> None:
    fake: FakeLabelStudio = fake_ls[0]
    settings = settings_factory(download_concurrency=1)
    done = threading.Event()
    with running_app(settings, detector) as url:

        def predict() -> None:
            tasks = [{"id": i, "data": {"image": f"/data/upload/3/{PHOTOS[i % 3]}?n={i}"}} for i in range(8)]
            httpx.post(
                f"{url}/predict", json={"tasks": tasks, "project": PROJECT, "label_config": label_config}, timeout=120
            )
            done.set()

        fake.delay_s = 0.3
        try:
            worker = threading.Thread(target=predict)
            worker.start()
            time.sleep(0.5)
            timings: list[tuple[float, float]] = []
            while not done.is_set() and len(timings) < 10:
                started = time.perf_counter()
                assert httpx.get(f"{url}/health").status_code == 200
                health_s = time.perf_counter() - started
                assert httpx.post(f"{url}/setup", json={"project": PROJECT, "schema": label_config}).status_code == 200
                timings.append((health_s, time.perf_counter() - started - health_s))
            worker.join(120)
        finally:
            fake.delay_s = 0.0
    assert len(timings) >= 3, "predict finished before /health could be measured"
    assert max(h for h, _ in timings) < 0.5, timings  # Label Studio gives up at 1 s
    assert max(s for _, s in timings) < 1.0, timings  # and at 3 s for /setup


def test_predict_downloads_with_personal_access_token(
    settings_factory: Callable[..., Settings], detector: Detector, label_config: str, fake_ls: tuple
) -> None:
    fake: FakeLabelStudio = fake_ls[0]
    issued_before = len(fake.issued)
    settings = settings_factory(label_studio_api_key=fake.pat)
    tasks = [{"id": 1, "data": {"image": f"/data/upload/3/{PHOTOS[2]}?pat=1"}}]
    with running_app(settings, detector) as url:
        results = httpx.post(
            f"{url}/predict", json={"tasks": tasks, "project": PROJECT, "label_config": label_config}, timeout=120
        ).json()["results"]
    assert results[0]["result"], "the image was downloaded and predicted"
    assert len(fake.issued) == issued_before + 1
    path, authorization = fake.requests[-1]
    assert path == f"/data/upload/3/{PHOTOS[2]}"
    assert authorization == f"Bearer {fake.issued[-1]}"
