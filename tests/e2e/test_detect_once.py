"""Detect once, label many (issue 13's done-when), in a real Label Studio 1.23 with real Redis and RQ workers.

1. A project is created and our backend connected *before* the photos are imported, so Label Studio's
   ``TASKS_CREATED`` webhook reaches the backend, which enqueues pre-annotation in chunks of task ids
   (``PRELABEL_CHUNK_SIZE=4`` in the stack: 21 photos -> 6 jobs on queue ``prelabel``).
2. The chunks run on two ``camtrap worker`` processes (the stack's and one started here): both took
   chunks (``Job.worker_name``), every task holds exactly one prediction of the detector-only version,
   each photo went through the detector at most once (``camtrap_detector_images_total`` grew by the
   photos the detection store did not hold yet), and Label Studio called no ``/predict`` (reading a task by
   id makes it do so: the jobs read the task list).
3. A subset is annotated (``flows.annotate_species``), *Start Training* -> the job promotes a classifier.
4. The promotion enqueues ``relabel-<project>``; ``GET /jobs/relabel-<project>`` reports it finished,
   having pushed one prediction per unannotated task with the detector not run. Read back through Label
   Studio's API, every unannotated task holds one prediction of the *new* ``model_version``.
5. Label Studio never asked ``/predict`` for them: the backend's ``camtrap_request_seconds_count{route=
   "predict"}`` did not move, and neither did ``camtrap_detector_images_total`` (summed over the uvicorn
   workers and the work horses through ``DATA_DIR/metrics``) while ``camtrap_classifier_crops_total`` grew.

The detector is MegadetectorLite's real weights (the PAT stack); nothing is mocked.
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from rq import Queue, Worker
from rq.job import Job

from backend.contracts.detection_store import DetectionStore, content_key
from backend.contracts.keys import PRELABEL_QUEUE, relabel_job_id, training_job_id
from backend.contracts.label_jobs import PRELABEL_FUNCTION
from tests.e2e import flows
from tests.e2e.conftest import REPO_ROOT, SERVICE_ENV, WORKER_START_TIMEOUT_S, Stack, worker_argv
from tests.processes import ManagedProcess, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

#: Species annotated before training (the photos of the others are left for the re-label job).
ANNOTATED_SPECIES = 5
PRELABEL_TIMEOUT_S = 600.0
DETECTOR = "camtrap_detector_images_total"
CROPS = "camtrap_classifier_crops_total"
PREDICT_REQUESTS = "camtrap_request_seconds_count"


@pytest.fixture
def photos(ena24_dir: Path, ena24_labels: dict[str, str]) -> list[flows.Photo]:
    return flows.shared_photos(ena24_dir, ena24_labels)


@pytest.fixture
def second_worker(pat_stack: Stack, tmp_path: Path) -> Any:
    """One more ``camtrap worker`` beside the stack's, same environment (Redis, DATA_DIR), stopped at the end."""
    name = f"e2e-second-{uuid.uuid4().hex[:8]}"
    process = ManagedProcess("worker-2", worker_argv(name), pat_stack.worker.env, REPO_ROOT, tmp_path / "worker-2.log")
    process.start()
    try:
        connection = flows.redis_of(pat_stack)
        wait_until(
            lambda: any(w.name == name for w in Worker.all(connection=connection)),
            timeout=WORKER_START_TIMEOUT_S,
            what=f"RQ worker {name} to register",
            processes=[process],
        )
        pat_stack.processes.append(process)
        yield name
    finally:
        if process in pat_stack.processes:
            pat_stack.processes.remove(process)
        process.stop()


def test_import_prelabels_on_two_workers_and_promotion_relabels_without_predict_or_detector(
    pat_stack: Stack, second_worker: str, photos: list[flows.Photo]
) -> None:
    stack = pat_stack
    api = stack.api
    first_worker = stack.worker.argv[stack.worker.argv.index("--name") + 1]
    store = DetectionStore.under(stack.backend.data_dir)
    with stack.backend.client() as backend:
        # 1. Project, backend connected (webhook secured), then the import: TASKS_CREATED -> chunks.
        project = flows.connect_backend(stack, flows.new_project(api, "Detect once (TASKS_CREATED)", photos))
        detector_only = project.ml_backend["model_version"]
        unstored = sum(1 for p in photos if not _stored(store, p.path))
        detector_before_import = flows.metric_value(backend, DETECTOR)
        predict_before_import = flows.metric_value(backend, PREDICT_REQUESTS, route="predict")
        flows.import_photos(api, project, photos)

        # 2. Six chunks, both workers, one detector-only prediction per task, each photo detected once.
        chunk_size = int(SERVICE_ENV["PRELABEL_CHUNK_SIZE"])
        jobs = _wait_for_prelabel_jobs(stack, project.id, math.ceil(len(photos) / chunk_size))
        assert [j.get_status() for j in jobs] == ["finished"] * len(jobs), [j.exc_info for j in jobs]
        ran_on = {j.worker_name for j in jobs}
        assert ran_on == {first_worker, second_worker}, f"both workers should take chunks: {ran_on}"
        chunks = [j.args[1] for j in jobs]
        assert sorted(t for c in chunks for t in c) == sorted(project.photos), f"chunks {chunks} are not the tasks"
        results = [j.return_value() for j in jobs]
        assert sum(r["posted"] for r in results) == len(photos), f"prelabel results: {results}"
        predictions = flows.predictions_by_task(api, project.id)
        for task_id in project.photos:
            versions = [p["model_version"] for p in predictions.get(task_id, [])]
            assert versions == [detector_only], f"task {task_id} should hold one {detector_only} prediction: {versions}"
            flows.check_boxes(predictions[task_id][0], f"pre-annotation, task {task_id}")
        assert all(_stored(store, p.path) for p in photos), "every photo's detections are in the store"
        detected = flows.metric_value(backend, DETECTOR) - detector_before_import
        assert detected == unstored, f"the detector ran on {detected} images, {unstored} were not stored yet"
        predicted = flows.metric_value(backend, PREDICT_REQUESTS, route="predict") - predict_before_import
        assert predicted == 0, f"Label Studio called /predict {predicted} times during the import's pre-annotation"

        # 3. Annotate, train, promote.
        annotated = flows.annotate_species(stack, project, ANNOTATED_SPECIES)
        unannotated = set(project.photos) - annotated
        before = _counts(backend)
        api.start_training(project.ml_backend["id"])
        train = flows.wait_for_job(stack, backend, training_job_id(str(project.id)))
        assert train["status"] == "finished", f"the training job ended {train['status']}: {train}"
        listing = flows.models_of(backend, project.id)
        assert listing["current"], f"nothing promoted: {listing}"
        new_version = listing["model_version"]
        assert new_version != detector_only, f"the version did not change: {listing}"

        # 4. The re-label job pushes the new version's predictions from the store.
        relabel = flows.wait_for_job(stack, backend, relabel_job_id(str(project.id)))
        assert relabel["status"] == "finished", f"relabel-{project.id} ended {relabel['status']}: {relabel}"
        result = relabel["result"]
        assert result["model_version"] == new_version, f"re-labelled with another version: {result}"
        assert result["annotated"] == len(annotated) and result["detected"] == 0, f"re-label counts: {result}"
        assert result["pushed"] == len(unannotated), f"one push per unannotated task expected: {result}"
        predictions = flows.predictions_by_task(api, project.id)
        labels = next(b for b in listing["bundles"] if b["version"] == listing["current"])["labels"]
        trained = set(labels.values() if isinstance(labels, dict) else labels)
        species_seen = 0
        for task_id in sorted(unannotated):
            current = [p for p in predictions.get(task_id, []) if p["model_version"] == new_version]
            assert len(current) == 1, f"task {task_id}: one {new_version} expected: {predictions.get(task_id)}"
            flows.check_boxes(current[0], f"re-label, task {task_id}")
            assert [p["model_version"] for p in predictions[task_id]].count(detector_only) == 1, predictions[task_id]
            for species in flows.species_results(current[0]):
                assert set(species["value"]["choices"]) <= trained, f"task {task_id}: {species} not of {trained}"
                species_seen += 1
        for task_id in annotated:
            assert all(p["model_version"] != new_version for p in predictions.get(task_id, [])), (
                f"annotated task {task_id} was re-labelled: {predictions.get(task_id)}"
            )
        assert species_seen > 0, f"no re-labelled task carries a species of {new_version}"

        # 5. No /predict, no detector; the classifier did the work.
        after = _counts(backend)
    assert after["predict"] == before["predict"], f"/predict was called during re-labelling: {before} -> {after}"
    assert after["detector"] == before["detector"], f"the detector ran during training/re-label: {before} -> {after}"
    assert after["crops"] > before["crops"], f"the new classifier classified no crop: {before} -> {after}"


def _stored(store: DetectionStore, path: Path) -> bool:
    """True when some detector's entry for this photo's bytes is in the store."""
    key = content_key(path.read_bytes())
    return any(store.root.glob(f"*/{key[:2]}/{key}.json"))


def _counts(backend: httpx.Client) -> dict[str, float]:
    return {
        "detector": flows.metric_value(backend, DETECTOR),
        "crops": flows.metric_value(backend, CROPS),
        "predict": flows.metric_value(backend, PREDICT_REQUESTS, route="predict"),
    }


def _wait_for_prelabel_jobs(stack: Stack, project_id: int, expected: int) -> list[Job]:
    """The project's pre-annotation jobs, once ``expected`` of them exist and none is queued or running."""
    connection = flows.redis_of(stack)
    queue = Queue(PRELABEL_QUEUE, connection=connection)

    def jobs() -> list[Job]:
        ids = {
            *queue.get_job_ids(),
            *queue.started_job_registry.get_job_ids(),
            *queue.finished_job_registry.get_job_ids(),
            *queue.failed_job_registry.get_job_ids(),
            *queue.scheduled_job_registry.get_job_ids(),
        }
        found = [j for j in Job.fetch_many(sorted(ids), connection=connection) if j is not None]
        return [j for j in found if j.func_name == PRELABEL_FUNCTION and j.meta.get("project") == str(project_id)]

    def done() -> list[Job] | None:
        mine = jobs()
        ended = [j for j in mine if j.get_status() in ("finished", "failed")]
        return mine if len(mine) == expected and len(ended) == expected else None

    started = time.monotonic()
    found = wait_until(
        done, timeout=PRELABEL_TIMEOUT_S, what=f"{expected} pre-annotation jobs to end", processes=stack.processes
    )
    print(f"pre-annotation: {expected} chunks in {time.monotonic() - started:.0f} s")  # noqa: T201 - timing in -s runs
    return sorted(found, key=lambda j: j.args[1][0])
