"""Label Studio answering 500/503 or timing out while a job exports or pushes predictions (issue 12).

Real Redis, a real ``python -m trainer worker``, the fake Label Studio of ``tests/backend/fake_ls.py``
over HTTP with :class:`~tests.backend.fake_ls.Fault` switches: chosen requests answer 500/503, or are
carried out and then hang past ``LABEL_STUDIO_TIMEOUT_S`` (Label Studio wrote the predictions, the answer
was lost). The client retries with backoff (``backend/labelstudio/retry.py``) and re-reads what arrived
before it pushes predictions again; the fake counts every try.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from backend.config import Settings
from backend.contracts.keys import RedisKeys
from backend.contracts.label_jobs import enqueue_prelabel, enqueue_relabel
from backend.contracts.promotion import set_current
from backend.service.jobs import enqueue_training
from tests.backend.bundles import write_bundle
from tests.backend.fake_ls import Fault
from tests.learning.conftest import ENA24_PROJECT
from tests.learning.services import Service, service_env, start_rq_worker
from tests.learning.test_chunked_prelabel import _finished, _store_schema, _unannotate
from tests.trainer.fake_label_studio import FakeProject

RETRIES = 3
#: Short, so a hang of HANG_S is a read timeout; backoff short so the test stays quick (0.05, 0.1, 0.2 s).
TIMEOUT_S = 1.0
HANG_S = 2.0
VERSION = "md_tiny_md_v5+v2"
EXPORT = f"/api/projects/{ENA24_PROJECT}/export"
BULK = f"/api/projects/{ENA24_PROJECT}/import/predictions"


@pytest.fixture
def worker(
    redis_url: str, redis_client: redis.Redis, data_dir: Path, tiny_detector_path: Path, ena24_ls, tmp_path: Path
) -> Iterator[Service]:
    env = service_env(
        redis_url,
        data_dir,
        tiny_detector_path,
        ena24_ls[1],
        LABEL_STUDIO_RETRIES=str(RETRIES),
        LABEL_STUDIO_RETRY_BACKOFF_S="0.05",
        LABEL_STUDIO_TIMEOUT_S=str(TIMEOUT_S),
    )
    service = start_rq_worker(env, tmp_path / "worker.log", redis_client)
    yield service
    service.stop()


def _promote_v2(fake: FakeProject, redis_client: redis.Redis, settings: Settings) -> None:
    species = sorted(fake.species)
    write_bundle(settings.models_dir, ENA24_PROJECT, "v2", favourite=species[0], labels=species)
    set_current(settings.models_dir, ENA24_PROJECT, "v2", redis_client, RedisKeys())


def _relabel(fake: FakeProject, redis_client: redis.Redis, settings: Settings, unannotated: int) -> list[int]:
    fake.tasks = fake.tasks[: unannotated + 2]
    ids = _unannotate(fake, unannotated)
    _store_schema(redis_client, fake)
    _promote_v2(fake, redis_client, settings)
    return ids


def test_export_retried_through_500_and_503_trains(worker, ena24_ls, redis_client, settings) -> None:
    fake, _ = ena24_ls
    fake.faults = [Fault(EXPORT, status=500, times=2), Fault(EXPORT, status=503, times=1)]
    job = enqueue_training(redis_client, settings, ENA24_PROJECT, trigger="test")
    [info] = _finished(redis_client, [job.job_id], timeout=180)
    assert info["status"] == "finished" and info["result"]["status"] == "promoted", info
    assert [f.hits for f in fake.faults] == [2, 1]
    assert fake.export_calls == 1, "the failed tries never reached the export; the fourth did"
    assert fake.calls.count(("GET", EXPORT)) == 4


def test_pushes_retried_after_503_and_a_timeout_post_each_task_once(worker, ena24_ls, redis_client, settings) -> None:
    fake, _ = ena24_ls
    ids = _relabel(fake, redis_client, settings, unannotated=6)
    fake.faults = [
        Fault("/api/tasks/", status=500, times=1),  # the task listing (a GET)
        Fault(BULK, method="POST", status=503, times=1),  # not carried out: resent whole
        Fault(BULK, method="POST", status=504, hang_s=HANG_S, applied=True),  # written, answer lost: not resent
    ]
    [info] = _finished(redis_client, [enqueue_relabel(redis_client, settings, ENA24_PROJECT, trigger="test")])
    assert info["status"] == "finished", info
    assert [f.hits for f in fake.faults] == [1, 1, 1]
    pushed = info["result"]["pushed"]
    assert pushed + info["result"]["empty"] + info["result"]["failed"] == len(ids) and pushed >= 1, info["result"]
    per_task = Counter(p["task"] for p in fake.predictions if p["model_version"] == VERSION)
    assert sum(per_task.values()) == pushed and max(per_task.values()) == 1, f"a task was pushed twice: {per_task}"
    assert fake.bulk_calls == [pushed], "only the timed-out call reached Label Studio's import"
    assert fake.calls.count(("POST", BULK)) == 2, "the re-read found every prediction: no third push"

    # One prediction at a time (pre-annotation): Label Studio writes it, then answers 500.
    for task in fake.tasks[:3]:
        task["annotations"] = []
    fake.predictions.clear()
    fake.faults = [Fault("/api/predictions/", method="POST", status=500, times=1, applied=True)]
    [job_id] = enqueue_prelabel(redis_client, settings, ENA24_PROJECT, ids[:3], trigger="test")
    [info] = _finished(redis_client, [job_id])
    assert info["status"] == "finished" and fake.faults[0].hits == 1, info
    per_task = Counter(p["task"] for p in fake.predictions)
    assert max(per_task.values()) == 1 and info["result"]["posted"] == len(per_task), (per_task, info["result"])


@pytest.mark.parametrize("job", ["export", "push"])
def test_label_studio_always_failing_fails_the_job_after_bounded_tries(
    job, worker, ena24_ls, redis_client, settings
) -> None:
    fake, url = ena24_ls
    if job == "export":
        fake.faults = [Fault(EXPORT, status=500, times=-1)]
        job_id = enqueue_training(redis_client, settings, ENA24_PROJECT, trigger="test").job_id
    else:
        _relabel(fake, redis_client, settings, unannotated=3)
        fake.faults = [Fault(BULK, method="POST", status=500, times=-1)]
        job_id = enqueue_relabel(redis_client, settings, ENA24_PROJECT, trigger="test")
    [info] = _finished(redis_client, [job_id], timeout=120)
    assert info["status"] == "failed", info
    assert fake.faults[0].hits == RETRIES + 1, "bounded: LABEL_STUDIO_RETRIES retries after the first try"
    error = info["error"]
    assert "\n" not in error and "answered 500 Internal Server Error" in error and url in error, error
    assert f"(gave up after {RETRIES + 1} tries)" in error, error
    if job == "export":
        assert info["stage"] == "exporting" and error.startswith(f"Label Studio at {url} could not export"), error
    else:
        assert error.startswith(f"Label Studio at {url} did not take the predictions") and not fake.predictions, error
