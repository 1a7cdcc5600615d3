"""Runtime: species from a classifier bundle, version strings, and hot swaps (Redis and polling)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from label_studio_sdk.label_interface import LabelInterface

from backend.config import Settings
from backend.contracts import promotion, registry
from backend.contracts.keys import RedisKeys
from backend.contracts.setup_record import SetupRecord
from backend.service.runtime import Runtime
from backend.vision.detector import Detector
from tests.backend.bundles import write_bundle
from tests.backend.conftest import PHOTOS, make_settings, running_app
from tests.processes import free_port, wait_until

PROJECT = "5"


def test_predict_emits_species_sharing_the_box_id(
    settings_factory: Callable[..., Settings], detector: Detector, label_config: str
) -> None:
    settings = settings_factory()
    write_bundle(settings.models_dir, PROJECT, "v1", favourite="Grey Fox")
    registry.write_current(settings.models_dir, PROJECT, "v1")
    tasks = [{"id": i, "data": {"image": f"/data/upload/5/{name}"}} for i, name in enumerate(PHOTOS)]
    with running_app(settings, detector) as url:
        version = httpx.post(f"{url}/setup", json={"project": "5.17", "schema": label_config}).json()["model_version"]
        results = httpx.post(
            f"{url}/predict", json={"tasks": tasks, "project": "5.17", "label_config": label_config}, timeout=120
        ).json()["results"]
    assert version == "md_tiny_md_v5+v1"
    interface = LabelInterface(label_config)
    species_seen = 0
    for prediction in results:
        assert interface.validate_prediction(prediction, return_errors=True) == []
        assert prediction["model_version"] == version
        boxes = {r["id"]: r for r in prediction["result"] if r["type"] == "rectanglelabels"}
        for region in (r for r in prediction["result"] if r["from_name"] == "species"):
            species_seen += 1
            box = boxes[region["id"]]
            assert box["value"]["rectanglelabels"] == ["animal"]
            assert region["value"]["choices"] == ["Grey Fox"]
            assert region["score"] > 0.9
            assert {k: region["value"][k] for k in ("x", "y", "width", "height")} == {
                k: box["value"][k] for k in ("x", "y", "width", "height")
            }
        assert all(
            r["value"]["rectanglelabels"] == ["animal"]
            for r in prediction["result"]
            if r["type"] == "rectanglelabels"
            and r["id"] in {s["id"] for s in prediction["result"] if s["from_name"] == "species"}
        )
    assert species_seen > 0


def test_detect_reports_classifications_with_project(
    settings_factory: Callable[..., Settings], detector: Detector, ena24_dir: Path
) -> None:
    settings = settings_factory()
    write_bundle(settings.models_dir, PROJECT, "v1", favourite="Chicken")
    registry.write_current(settings.models_dir, PROJECT, "v1")
    with running_app(settings, detector) as url:
        files = [("images", (PHOTOS[0], (ena24_dir / PHOTOS[0]).read_bytes(), "image/jpeg"))]
        output = httpx.post(f"{url}/v1/detect", params={"project": PROJECT}, files=files, timeout=120).json()
    chicken = [k for k, v in output["classification_categories"].items() if v == "Chicken"]
    classified = [d for d in output["images"][0]["detections"] if "classifications" in d]
    assert output["info"]["model_version"] == "md_tiny_md_v5+v1"
    assert classified and all(d["category"] == "1" for d in classified)
    assert all(d["classifications"][0][0] == chicken[0] for d in classified)


def test_runtime_swaps_classifier_on_redis_announcement(
    tmp_path: Path, detector: Detector, redis_url: str, redis_client: redis.Redis
) -> None:
    settings = make_settings(tmp_path, None, redis_url, model_poll_interval_s=60.0)
    write_bundle(settings.models_dir, PROJECT, "v1", favourite="Grey Fox")
    registry.write_current(settings.models_dir, PROJECT, "v1")
    runtime = Runtime(settings, detector)
    try:
        runtime.start_watcher()
        in_flight = runtime.slot(PROJECT)
        assert runtime.model_version(PROJECT) == "md_tiny_md_v5+v1"
        time.sleep(0.3)  # let the watcher subscribe
        write_bundle(settings.models_dir, PROJECT, "v2", favourite="Chicken")
        promotion.set_current(settings.models_dir, PROJECT, "v2", redis_client, RedisKeys(settings.redis_prefix))
        wait_until(
            lambda: runtime.model_version(PROJECT) == "md_tiny_md_v5+v2",
            timeout=5.0,
            what="the swap to v2",
            interval=0.05,
        )
        assert in_flight.classifier.version == "v1"  # a request holding the old slot finishes on it
        assert runtime.slot(PROJECT).classifier.labels == in_flight.classifier.labels
    finally:
        runtime.close()


def test_runtime_swaps_by_polling_when_redis_is_down(tmp_path: Path, detector: Detector) -> None:
    settings = make_settings(tmp_path, None, f"redis://127.0.0.1:{free_port()}/0", model_poll_interval_s=0.2)
    runtime = Runtime(settings, detector)
    try:
        runtime.start_watcher()
        assert runtime.model_version(PROJECT) == "md_tiny_md_v5+none"
        write_bundle(settings.models_dir, PROJECT, "v1", favourite="Grey Fox")
        promotion.set_current(settings.models_dir, PROJECT, "v1", None, RedisKeys())
        wait_until(
            lambda: runtime.model_version(PROJECT) == "md_tiny_md_v5+v1",
            timeout=5.0,
            what="v1 from the pointer",
            interval=0.05,
        )
        registry.write_current(settings.models_dir, PROJECT, None)  # rollback to detector only
        wait_until(
            lambda: runtime.model_version(PROJECT) == "md_tiny_md_v5+none",
            timeout=5.0,
            what="the rollback",
            interval=0.05,
        )
    finally:
        runtime.close()


def test_runtime_keeps_serving_when_new_bundle_is_broken(tmp_path: Path, detector: Detector) -> None:
    settings = make_settings(tmp_path, None, f"redis://127.0.0.1:{free_port()}/0")
    write_bundle(settings.models_dir, PROJECT, "v1", favourite="Grey Fox")
    registry.write_current(settings.models_dir, PROJECT, "v1")
    runtime = Runtime(settings, detector)
    try:
        assert runtime.model_version(PROJECT) == "md_tiny_md_v5+v1"
        broken = write_bundle(settings.models_dir, PROJECT, "v2", favourite="Chicken")
        (broken / "classifier.safetensors").write_bytes(b"not weights")
        registry.write_current(settings.models_dir, PROJECT, "v2")
        runtime.slots.refresh(PROJECT)
        assert runtime.model_version(PROJECT) == "md_tiny_md_v5+v1"
    finally:
        runtime.close()


@pytest.mark.parametrize(
    ("extra_params", "expected"),
    [
        pytest.param({}, (0.01, 0.1, 0.2, 0.3), id="env-defaults"),
        pytest.param(
            {"detection_threshold": "0.05", "classify_threshold": 0.3, "show_threshold": 0.4, "species_threshold": 0.6},
            (0.05, 0.3, 0.4, 0.6),
            id="all-overridden",
        ),
        pytest.param({"show_threshold": "high"}, (0.01, 0.1, 0.2, 0.3), id="unparsable-ignored"),
    ],
)
def test_thresholds_extra_params_win_over_env(
    tmp_path: Path, detector: Detector, extra_params: dict, expected: tuple
) -> None:
    runtime = Runtime(make_settings(tmp_path, None, f"redis://127.0.0.1:{free_port()}/0"), detector)
    try:
        runtime.setups.remember(PROJECT, SetupRecord(extra_params=extra_params), None)
        t = runtime.thresholds(PROJECT)
        assert (t.detection, t.classify, t.show, t.species) == expected
    finally:
        runtime.close()


def test_project_setup_is_read_back_from_redis_by_another_process(
    tmp_path: Path, detector: Detector, redis_url: str, redis_client: redis.Redis
) -> None:
    settings = make_settings(tmp_path, None, redis_url)
    first = Runtime(settings, detector, redis_client=redis_client)
    second = Runtime(settings, detector, redis_client=redis_client)
    try:
        record = SetupRecord(schema="<View/>", extra_params={"show_threshold": 0.7}, hostname="http://ls:8080")
        first.setups.remember(PROJECT, record, "secret-token")
        setup = second.project_setup(PROJECT)
        assert (setup.schema, setup.extra_params, setup.hostname) == (
            "<View/>",
            {"show_threshold": 0.7},
            "http://ls:8080",
        )
        assert setup.access_token is None  # tokens stay in memory, never in Redis
        assert second.thresholds(PROJECT).show == 0.7
    finally:
        first.close()
        second.close()


def test_setup_answers_within_budget_while_classifier_loads(
    settings_factory: Callable[..., Settings],
    detector: Detector,
    label_config: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from backend.vision.classifier import SpeciesClassifier

    settings = settings_factory()
    write_bundle(settings.models_dir, PROJECT, "v1", favourite="Grey Fox")
    registry.write_current(settings.models_dir, PROJECT, "v1")
    real_load = SpeciesClassifier.load.__func__

    def slow_load(cls: type, *args: object, **kwargs: object) -> SpeciesClassifier:
        time.sleep(4)
        return real_load(cls, *args, **kwargs)

    monkeypatch.setattr(SpeciesClassifier, "load", classmethod(slow_load))
    with running_app(settings, detector) as url:
        started = time.perf_counter()
        response = httpx.post(f"{url}/setup", json={"project": "5.1", "schema": label_config}, timeout=10)
        elapsed = time.perf_counter() - started
        # the pointer's version, not yet loaded
        assert response.json() == {"model_version": "md_tiny_md_v5+v1", "detector": "md_tiny_md_v5"}
        assert 1.5 < elapsed < 3.0
        # the load went on in its thread after /setup answered
        wait_until(
            lambda: "camtrap_model_swaps_total 1.0" in httpx.get(f"{url}/metrics").text,
            timeout=10,
            what="one swap in /metrics",
            interval=0.05,
        )


def test_setup_warns_and_predict_counts_labels_the_config_cannot_show(
    settings_factory: Callable[..., Settings], detector: Detector, label_config: str
) -> None:
    settings = settings_factory()
    write_bundle(settings.models_dir, PROJECT, "v1", favourite="Snow Leopard", labels=["Grey Fox", "Snow Leopard"])
    registry.write_current(settings.models_dir, PROJECT, "v1")
    tasks = [{"id": i, "data": {"image": f"/data/upload/5/{name}"}} for i, name in enumerate(PHOTOS)]
    with running_app(settings, detector) as url:
        setup = httpx.post(f"{url}/setup", json={"project": PROJECT, "schema": label_config}).json()
        results = httpx.post(
            f"{url}/predict", json={"tasks": tasks, "project": PROJECT, "label_config": label_config}, timeout=120
        ).json()["results"]
        metrics = httpx.get(f"{url}/metrics").text
    assert setup["model_version"] == "md_tiny_md_v5+v1"
    [warning] = setup["warnings"]
    assert "['Snow Leopard']" in warning and "Grey Fox" not in warning
    assert not [r for p in results for r in p["result"] if r["from_name"] == "species"]
    shown = sum(1 for p in results for r in p["result"] if r.get("value", {}).get("rectanglelabels") == ["animal"])
    assert shown and f'camtrap_unmapped_labels_total{{label="Snow Leopard"}} {float(shown)}' in metrics
