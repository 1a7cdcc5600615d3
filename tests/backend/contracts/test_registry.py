"""The served-version pointer, its Redis mirror and announcement, and model_version strings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from backend.contracts import promotion, registry
from backend.contracts.bundle import commit_bundle
from backend.contracts.keys import RedisKeys
from backend.errors import BundleError
from tests.backend.bundles import stage_bundle


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        pytest.param("MDV5A", "md_v5a", id="name"),
        pytest.param("/models/md_v5b.0.0.pt", "md_v5b_0_0", id="file"),
        pytest.param("/tmp/tiny.pt", "md_tiny", id="other-file"),
    ],
)
def test_detector_id_is_short_and_stable(model: str, expected: str) -> None:
    assert registry.detector_id(model) == expected


def test_model_version_without_classifier_says_none() -> None:
    assert registry.model_version("md_v5a", None) == "md_v5a+none"
    assert registry.model_version("md_v5a", "p3-1") == "md_v5a+p3-1"


def test_read_current_is_none_before_any_promotion(tmp_path: Path) -> None:
    assert registry.read_current(tmp_path, "3") is None


def test_set_current_writes_pointer_mirrors_and_announces(tmp_path: Path, redis_client: redis.Redis) -> None:
    staging, manifest = stage_bundle(tmp_path, "3")
    commit_bundle(staging, tmp_path, manifest)
    keys = RedisKeys()
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.models_channel)
    pubsub.get_message(timeout=1)

    promotion.set_current(tmp_path, "3", manifest.version, redis_client, keys)

    assert registry.read_current(tmp_path, "3") == manifest.version
    assert redis_client.get(keys.current("3")).decode() == manifest.version
    message = pubsub.get_message(timeout=2)
    assert message is not None and json.loads(message["data"]) == {"project": "3", "version": manifest.version}


def test_set_current_refuses_unknown_version_and_keeps_pointer(tmp_path: Path) -> None:
    staging, manifest = stage_bundle(tmp_path, "3")
    commit_bundle(staging, tmp_path, manifest)
    promotion.set_current(tmp_path, "3", manifest.version, None, RedisKeys())
    with pytest.raises(BundleError):
        promotion.set_current(tmp_path, "3", "p3-nope", None, RedisKeys())
    assert registry.read_current(tmp_path, "3") == manifest.version


def test_announce_survives_redis_down(tmp_path: Path) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.1)
    promotion.announce(dead, RedisKeys(), "3", "v1")  # logs, does not raise


def test_set_current_none_rolls_back_to_the_detector_alone(tmp_path: Path, redis_client: redis.Redis) -> None:
    staging, manifest = stage_bundle(tmp_path, "3")
    commit_bundle(staging, tmp_path, manifest)
    keys = RedisKeys()
    promotion.set_current(tmp_path, "3", manifest.version, redis_client, keys)
    promotion.set_current(tmp_path, "3", registry.NO_CLASSIFIER, redis_client, keys)
    assert registry.read_current(tmp_path, "3") is None
    assert redis_client.get(keys.current("3")) == b""
