"""An offline training job trains from random weights and says so: GET /jobs/{id}, the log, the card, GET /models.

Real processes: a ``camtrap worker`` trains on the shared ENA24 photos served by the fake Label Studio, the
backend runs under uvicorn. Offline is real too: an empty ``TORCH_HOME`` and a ``PRETRAINED_URL`` on a
closed local port, so torch.hub's download fails the way it does without a network.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from backend.contracts import registry
from backend.contracts.bundle import CARD_FILE, NO_PRETRAINED, bundle_dir
from backend.service.jobs import enqueue_training, job_info
from tests.learning.conftest import ENA24_PROJECT
from tests.learning.services import start_backend, start_rq_worker
from tests.processes import free_port, wait_until

pytestmark = pytest.mark.slow


def test_offline_job_trains_from_random_weights_and_says_so_everywhere(
    worker_env, redis_client, settings, data_dir, tmp_path: Path
):
    closed = f"http://127.0.0.1:{free_port()}/mobilenet_v3_small-047dcff4.pth"
    env = {**worker_env, "TORCH_HOME": str(tmp_path / "torch"), "PRETRAINED_URL": closed}
    worker = start_rq_worker(env, tmp_path / "worker.log", redis_client)
    try:
        job = enqueue_training(redis_client, settings, ENA24_PROJECT, trigger="test")
        info = wait_until(
            lambda: (i := job_info(redis_client, job.job_id)) and i["status"] in ("finished", "failed") and i,
            timeout=240,
            what="the training job",
            interval=0.2,
            errors="raise",
        )
    finally:
        worker.stop()
    assert info["status"] == "finished", info
    progress = info["progress"]
    assert progress["pretrained"] is False
    start = progress["starting_weights"]
    assert (start["name"], start["pretrained"], start["sha256"]) == ("random", False, None)
    assert f"could not be downloaded from {closed}" in start["source"]
    assert f"mobilenet_v3_small: {NO_PRETRAINED} (random init)" in worker.log()

    version = registry.read_current(data_dir / "models", ENA24_PROJECT)
    card = (bundle_dir(data_dir / "models", ENA24_PROJECT, version) / CARD_FILE).read_text()
    assert f"- starting weights: {NO_PRETRAINED} (random init): ImageNet weights are not in " in card

    port = free_port()
    backend = start_backend(env, tmp_path / "backend.log", port, workers=1)
    try:
        listing = httpx.get(f"http://127.0.0.1:{port}/models", params={"project": ENA24_PROJECT}, timeout=10)
    finally:
        backend.stop()
    (row,) = listing.json()["projects"][ENA24_PROJECT]["bundles"]
    assert row["version"] == version and row["starting_weights"]["pretrained"] is False
    assert row["starting_weights"]["summary"].startswith(f"{NO_PRETRAINED} (random init): ")
