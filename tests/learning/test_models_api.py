"""``GET /models``, ``POST /models/{version}/promote`` and ``GET /versions`` over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from rq.job import Job

from backend.contracts import registry
from backend.contracts.bundle import BundleStatus
from backend.contracts.keys import RedisKeys
from tests.backend.bundles import write_bundle
from tests.learning.conftest import BASIC

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "21"
KEYS = RedisKeys()


def _bundle(settings, version: str, status: BundleStatus, reason: str, macro_f1: float) -> None:
    metrics = {
        "test": {"count": 6, "top1": macro_f1, "macro_f1": macro_f1, "per_class": {}},
        "served": {"version": None, "macro_f1": None, "note": "no model served"},
        "split": {"counts": {"train": {"Grey Fox": 4}, "val": {}, "test": {}}, "grouping": "location"},
        "gate": {"against": "p21-a2", "comparable": True, "gain": -0.1, "interval": [-0.3, 0.05], "crops": 40},
    }
    write_bundle(
        settings.models_dir,
        PROJECT,
        version,
        labels=["Grey Fox", "Chicken"],
        serve=status == BundleStatus.PROMOTED,  # as the trainer's publisher does
        job_id="train-21",
        input_size=224,
        status=status,
        reason=reason,
        metrics={"top1": macro_f1, "macro_f1": macro_f1},
        metrics_file=metrics,
    )


@pytest.fixture
def bundles(app_settings, own_redis) -> Iterator[list[str]]:
    """Three bundles of project 21: v1 promoted, v2 promoted (current), v3 rejected."""
    _bundle(app_settings, "p21-a1", BundleStatus.PROMOTED, "no classifier was served yet", 0.5)
    _bundle(app_settings, "p21-a2", BundleStatus.PROMOTED, "better", 0.7)
    _bundle(app_settings, "p21-a3", BundleStatus.REJECTED, "not better than the served model: 0.6 vs 0.7", 0.6)
    yield ["p21-a1", "p21-a2", "p21-a3"]
    for child in sorted((app_settings.models_dir / PROJECT).rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()


@pytest.fixture
def http(app_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app_url, auth=BASIC, timeout=10) as client:
        yield client


def test_models_lists_bundles_newest_first_with_metrics_current_and_rejection_reason(http, bundles):
    listing = http.get("/models", params={"project": PROJECT}).json()["projects"][PROJECT]
    assert listing["current"] == "p21-a2" and listing["model_version"] == "md_tiny_md_v5+p21-a2"
    rows = {b["version"]: b for b in listing["bundles"]}
    assert [b["version"] for b in listing["bundles"]] == ["p21-a3", "p21-a2", "p21-a1"]
    assert rows["p21-a2"]["current"] and not rows["p21-a1"]["current"]
    assert rows["p21-a3"]["status"] == "rejected"
    assert rows["p21-a3"]["reason"] == "not better than the served model: 0.6 vs 0.7"
    assert rows["p21-a1"]["metrics"] == {"top1": 0.5, "macro_f1": 0.5}
    assert rows["p21-a1"]["test"]["count"] == 6
    assert rows["p21-a3"]["grouping"] == "location"
    gate = rows["p21-a3"]["gate"]
    assert (gate["against"], gate["gain"], gate["interval"], gate["crops"]) == ("p21-a2", -0.1, [-0.3, 0.05], 40)


def test_promote_rolls_back_moves_the_pointer_and_announces_it(http, bundles, app_settings, own_redis):
    store = redis.Redis.from_url(own_redis.url)
    pubsub = store.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(KEYS.models_channel)
    answer = http.post("/models/p21-a1/promote", params={"project": PROJECT}).json()
    assert answer == {
        "project": PROJECT,
        "current": "p21-a1",
        "previous": "p21-a2",
        "model_version": "md_tiny_md_v5+p21-a1",
    }
    assert registry.read_current(app_settings.models_dir, PROJECT) == "p21-a1"
    assert store.get(KEYS.current(PROJECT)) == b"p21-a1"
    relabel = Job.fetch(f"relabel-{PROJECT}", connection=store)
    assert relabel.func_name == "trainer.jobs.relabel_project" and relabel.args == (PROJECT,)
    assert relabel.meta["trigger"] == "p21-a1 promoted by hand"
    message = None
    deadline = time.monotonic() + 5
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
    assert json.loads(message["data"]) == {"project": PROJECT, "version": "p21-a1"}
    # Roll forward without naming the project: it is found from the version.
    assert http.post("/models/p21-a2/promote").json()["current"] == "p21-a2"


@pytest.mark.parametrize(
    ("version", "status"),
    [pytest.param("p21-nope", 404, id="unknown-version"), pytest.param("no*such", 422, id="invalid-name")],
)
def test_promote_refuses_what_is_not_a_bundle(http, bundles, app_settings, version, status):
    assert http.post(f"/models/{version}/promote", params={"project": PROJECT}).status_code == status
    assert registry.read_current(app_settings.models_dir, PROJECT) == "p21-a2"


@pytest.mark.parametrize(
    ("how", "expected_first"),
    [
        pytest.param("json-body", "md_tiny_md_v5+p21-a2", id="label-studio-get-with-body"),
        pytest.param("query", "md_tiny_md_v5+p21-a2", id="query-parameter"),
        pytest.param("nothing", "md_tiny_md_v5+p21-a2", id="no-project-the-only-trained-one"),
    ],
)
def test_versions_lists_model_versions_current_first(http, bundles, how, expected_first):
    if how == "json-body":
        response = http.request(
            "GET",
            "/versions",
            content=json.dumps({"project": f"{PROJECT}.1714557000"}),
            headers={"Content-Type": "application/json"},
        )
    elif how == "query":
        response = http.get("/versions", params={"project": PROJECT})
    else:
        response = http.get("/versions")
    versions = response.json()["versions"]
    assert versions[0] == expected_first
    assert sorted(versions) == sorted([f"md_tiny_md_v5+{v}" for v in bundles] + ["md_tiny_md_v5+none"])


def test_model_routes_require_basic_auth(app_url, bundles):
    assert httpx.get(f"{app_url}/models").status_code == 401
    assert httpx.post(f"{app_url}/models/p21-a1/promote").status_code == 401
    assert httpx.get(f"{app_url}/versions").status_code == 401


def test_promote_none_rolls_back_to_the_detector_alone_in_every_answer(http, bundles, app_settings, own_redis):
    setup = {"project": f"{PROJECT}.1714557000", "schema": (ROOT / "label_config.xml").read_text()}
    assert http.post("/setup", json=setup).json()["model_version"] == "md_tiny_md_v5+p21-a2"
    store = redis.Redis.from_url(own_redis.url)
    pubsub = store.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(KEYS.models_channel)

    answer = http.post("/models/none/promote", params={"project": PROJECT}).json()

    assert answer == {"project": PROJECT, "current": None, "previous": "p21-a2", "model_version": "md_tiny_md_v5+none"}
    assert registry.read_current(app_settings.models_dir, PROJECT) is None
    message = None
    deadline = time.monotonic() + 5
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
    assert json.loads(message["data"]) == {"project": PROJECT, "version": None}
    deadline = time.monotonic() + 10
    while (version := http.post("/setup", json=setup).json()["model_version"]) != "md_tiny_md_v5+none":
        assert time.monotonic() < deadline, f"/setup still reports {version} after the rollback to none"
        time.sleep(0.2)


def test_promote_none_needs_the_project(http, bundles):
    response = http.post("/models/none/promote")
    assert response.status_code == 422 and "?project=" in response.json()["detail"]
