"""The whole loop in a real Label Studio 1.23, driven through its REST API as a user's clicks would.

1. Create a project from label_config.xml (species list = the photos' species), upload the shared
   ENA24 photos with a ``location`` per task, connect our backend as the project's ML backend.
2. Retrieve predictions (the Data Manager action): every task gets one prediction of the backend's
   ``model_version`` with boxes LS stored; the count of tasks with predictions is read back.
3. Annotate a subset as an annotator would: the prediction's top animal box kept (a box drawn where there is
   none) with its species. The PAT stack runs MegadetectorLite's real weights, so those are real detections
   and the training crops hold the animals; the legacy stack keeps the random-weight MDv5-shaped checkpoint.
4. Start Training (``POST /api/ml/{id}/train``) -> the job runs on the RQ worker -> the bundle is
   promoted -> /setup reports the new version -> the re-label job pushes the unannotated tasks' predictions
   of the new version (species from the new model); retrieving predictions then asks /predict only for the
   annotated tasks: every task ends with exactly one prediction of the new version.
6. Auto-training on for the project (``train_every_n_annotations`` in the model's extra params):
   N-1 annotations start nothing, the N-th starts a job with no button press.
5. Roll back through our API (``POST /models/{version}/promote``) -> LS sees the old version again.

Step 5 runs after step 6 because a rollback needs an older *bundle* to go back to: the API promotes
bundles, and the only version older than the first bundle is the detector-only one. The auto-trained
bundle of step 6 is the second one.

Both authentication modes run the steps that make the backend and the worker talk to LS (1-4):
a personal access token (refresh -> Bearer, legacy tokens off, plus basic auth and the webhook
secret) and a legacy token (``Token``, personal tokens off). Any failed step fails the test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.contracts.bundle import BLANK_LABEL
from backend.contracts.keys import RedisKeys, relabel_job_id, training_job_id
from tests.e2e import flows
from tests.e2e.conftest import Stack
from tests.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

#: Species annotated in step 3 (the photos of the others stay unannotated for the new model).
ANNOTATED_SPECIES = 5
#: Auto-training threshold set for the project in step 6.
AUTO_TRAIN_N = 3


@pytest.fixture
def photos(ena24_dir: Path, ena24_labels: dict[str, str]) -> list[flows.Photo]:
    return flows.shared_photos(ena24_dir, ena24_labels)


def test_loop_with_personal_access_token(pat_stack: Stack, photos: list[flows.Photo]) -> None:
    stack = pat_stack
    with stack.backend.client() as backend:
        project = step1_create_project_and_connect(stack, photos, title="Camera traps (PAT)")
        detector_only = step2_retrieve_predictions(stack, project)
        check_real_boxes(stack, project, detector_only)
        annotated = step3_annotate(stack, project)
        first = step4_train_and_repredict(stack, backend, project, annotated, previous_version=detector_only)
        second = step6_auto_training(stack, backend, project, annotated, first=first)
        step5_rollback(stack, backend, project, old=first["bundle"], new=second["bundle"])


def test_loop_with_legacy_token(legacy_stack: Stack, photos: list[flows.Photo]) -> None:
    stack = legacy_stack
    with stack.backend.client() as backend:
        project = step1_create_project_and_connect(stack, photos, title="Camera traps (legacy token)")
        detector_only = step2_retrieve_predictions(stack, project)
        annotated = step3_annotate(stack, project)
        step4_train_and_repredict(stack, backend, project, annotated, previous_version=detector_only)


# --- the steps ---------------------------------------------------------------------------------------


def step1_create_project_and_connect(stack: Stack, photos: list[flows.Photo], title: str) -> flows.CamtrapProject:
    """Project from label_config.xml, photos with locations, our backend connected (and its webhook secured)."""
    project = flows.create_project(stack.api, title, photos)
    return flows.connect_backend(stack, project)


def step2_retrieve_predictions(stack: Stack, project: flows.CamtrapProject) -> str:
    """Data Manager -> Retrieve Predictions on every task; returns the detector-only model_version."""
    api = stack.api
    version = api.ml_backend(project.ml_backend["id"])["model_version"]
    answer = api.retrieve_predictions(project.id)
    assert answer.get("processed_items") == len(project.photos), f"step 2: the action answered {answer}"
    predictions = flows.predictions_by_task(api, project.id)
    assert set(predictions) == set(project.photos), (
        f"step 2: {len(predictions)} of {len(project.photos)} tasks have a prediction; "
        f"missing {sorted(set(project.photos) - set(predictions))}"
    )
    total_boxes = 0
    for task_id, task_predictions in predictions.items():
        assert [p["model_version"] for p in task_predictions] == [version], (
            f"step 2: task {task_id} should hold one prediction of {version}: {task_predictions}"
        )
        prediction = task_predictions[0]
        assert 0 <= (prediction["score"] or 0) <= 1, f"step 2: task {task_id}: score {prediction['score']}"
        flows.check_boxes(prediction, f"step 2, task {task_id}")
        assert not flows.species_results(prediction), f"step 2: species without a classifier: {prediction}"
        total_boxes += len(flows.boxes(prediction))
    assert total_boxes > 0, "step 2: the detector's predictions reached LS without a single box"
    counts = api.project(project.id)
    assert counts["total_predictions_number"] == len(project.photos), f"step 2: project counters {counts}"
    return version


def check_real_boxes(stack: Stack, project: flows.CamtrapProject, version: str) -> None:
    """The PAT stack runs MegadetectorLite: most photos got an animal box, so the annotations of step 3 keep
    real detections and training crops animals (matched to the detector's stored boxes)."""
    assert version == "mdlite+none", f"the PAT stack should serve MegadetectorLite: {version}"
    predictions = flows.predictions_by_task(stack.api, project.id)
    boxed = [
        task_id
        for task_id, (prediction, *_) in predictions.items()
        if any("animal" in b["value"]["rectanglelabels"] for b in flows.boxes(prediction))
    ]
    assert len(boxed) >= 18, f"only {len(boxed)} of {len(predictions)} photos got an animal box from mdlite"
    for task_id in boxed:
        region = flows.boxes(predictions[task_id][0])[0]["value"]
        assert 0.2 < region["width"] * region["height"] / 100 < 60, f"task {task_id}: implausible box {region}"


def step3_annotate(stack: Stack, project: flows.CamtrapProject) -> set[int]:
    """Annotate the photos of the first species: one box with its species each, starting from the prediction."""
    return flows.annotate_species(stack, project, ANNOTATED_SPECIES)


def step4_train_and_repredict(
    stack: Stack, backend: httpx.Client, project: flows.CamtrapProject, annotated: set[int], previous_version: str
) -> dict[str, Any]:
    """Start Training in LS -> job on the worker -> promoted bundle -> new version in LS and in its predictions."""
    api = stack.api
    ml_id = project.ml_backend["id"]
    job_id = training_job_id(str(project.id))
    api.start_training(ml_id)
    ml = api.ml_backend(ml_id)
    assert ml["state"] != "ER" and not ml.get("error_message"), f"step 4: LS could not start training: {ml}"
    job = flows.wait_for_job(stack, backend, job_id)
    assert job["status"] == "finished", f"step 4: the training job ended {job['status']}: {job}"
    assert job["progress"].get("trigger") == "START_TRAINING", f"step 4: not the button's job: {job}"

    listing = flows.models_of(backend, project.id)
    current = listing["current"]
    assert current, f"step 4: nothing promoted after the first training (no served model to beat): {listing}"
    bundle = next(b for b in listing["bundles"] if b["version"] == current)
    assert bundle["status"] == "promoted", f"step 4: {bundle}"
    assert bundle["job_id"] == job_id, f"step 4: the current bundle was not made by {job_id}: {bundle}"
    trained_species = set(bundle["labels"].values() if isinstance(bundle["labels"], dict) else bundle["labels"])
    # blank: real detections the annotator did not keep (a second box on an annotated photo) are empty examples
    annotated_species = set(project.species[:ANNOTATED_SPECIES])
    assert annotated_species <= trained_species <= annotated_species | {BLANK_LABEL}, (
        f"step 4: trained on {trained_species}"
    )
    new_version = listing["model_version"]
    assert new_version != previous_version, f"step 4: the version did not change ({new_version})"
    flows.wait_for_version(stack, backend, project, new_version)
    # The promotion re-labels the unannotated tasks (relabel-<project>, pushed through LS's API); once it is
    # done, Retrieve Predictions asks /predict only for the tasks without the new version: the annotated ones.
    relabel = flows.wait_for_job(stack, backend, relabel_job_id(str(project.id)))
    assert relabel["status"] == "finished", f"step 4: the re-label job ended {relabel['status']}: {relabel}"

    answer = api.retrieve_predictions(project.id)
    assert answer.get("processed_items") == len(project.photos), f"step 4: the action answered {answer}"
    predictions = flows.predictions_by_task(api, project.id)
    for task_id in sorted(annotated):
        versions = [p["model_version"] for p in predictions.get(task_id, [])]
        assert versions.count(new_version) == 1, f"step 4: annotated task {task_id} from /predict: {versions}"
    species_seen = 0
    for task_id in sorted(set(project.photos) - annotated):
        current_predictions = [p for p in predictions.get(task_id, []) if p["model_version"] == new_version]
        assert len(current_predictions) == 1, (
            f"step 4: task {task_id} should hold one prediction of {new_version}: {predictions.get(task_id)}"
        )
        prediction = current_predictions[0]
        flows.check_boxes(prediction, f"step 4, task {task_id}")
        box_ids = {b["id"] for b in flows.boxes(prediction)}
        for result in flows.species_results(prediction):
            assert result["id"] in box_ids, f"step 4: task {task_id}: species of no box: {result}"
            assert set(result["value"]["choices"]) <= trained_species, f"step 4: task {task_id}: {result}"
            species_seen += 1
    assert species_seen > 0, (
        f"step 4: no unannotated task got a species from {new_version}; predictions: "
        f"{[predictions.get(t) for t in sorted(set(project.photos) - annotated)][:2]}"
    )
    return {"job": job, "bundle": current, "model_version": new_version}


def step6_auto_training(
    stack: Stack, backend: httpx.Client, project: flows.CamtrapProject, annotated: set[int], first: dict[str, Any]
) -> dict[str, Any]:
    """With ``train_every_n_annotations`` = N for the project, the N-th submitted annotation starts a job."""
    api = stack.api
    job_id = training_job_id(str(project.id))
    first_job = first["job"]
    # Settings -> Model -> edit: extra params; LS sends them to /setup when it saves.
    ml = api.update_ml_backend(
        project.ml_backend,
        basic_auth=stack.backend.basic_auth,
        extra_params={"train_every_n_annotations": AUTO_TRAIN_N},
    )
    assert ml["state"] == "CO", f"step 6: LS could not re-check the backend after the edit: {ml}"
    pending_key = RedisKeys().pending(str(project.id))
    assert int(flows.redis_of(stack).get(pending_key) or 0) == 0, "step 6: Start Training should have reset the counter"
    remaining = sorted(set(project.photos) - annotated)[:AUTO_TRAIN_N]
    assert len(remaining) == AUTO_TRAIN_N, "step 6: not enough unannotated photos"
    predictions = flows.predictions_by_task(api, project.id)  # every version's boxes are the same detector's
    for i, task_id in enumerate(remaining, start=1):
        prediction = predictions[task_id][0] if predictions.get(task_id) else None
        api.create_annotation(task_id, flows.annotation_result(project.photos[task_id], f"box-{task_id}", prediction))
        annotated.add(task_id)
        if i < AUTO_TRAIN_N:
            job = flows.job_info(backend, job_id)
            assert job["enqueued_at"] == first_job["enqueued_at"], (
                f"step 6: a job started after {i} of {AUTO_TRAIN_N} annotations: {job}"
            )
    wait_until(
        lambda: flows.job_info(backend, job_id)["enqueued_at"] != first_job["enqueued_at"],
        timeout=30,
        what=f"the {AUTO_TRAIN_N}th annotation to enqueue a training job",
        processes=stack.processes,
    )
    job = flows.wait_for_job(stack, backend, job_id)
    assert job["status"] == "finished", f"step 6: the auto-training job ended {job['status']}: {job}"
    assert str(job["progress"].get("trigger")).startswith("auto"), f"step 6: not an automatic trigger: {job}"
    listing = flows.models_of(backend, project.id)
    newer = [b["version"] for b in listing["bundles"] if b["version"] != first["bundle"]]
    assert len(newer) == 1, f"step 6: expected one more bundle after auto-training: {listing}"
    return {"job": job, "bundle": newer[0], "listing": listing}


def step5_rollback(stack: Stack, backend: httpx.Client, project: flows.CamtrapProject, old: str, new: str) -> None:
    """Serve the newer bundle, then roll back to the older one through our API: LS follows both times."""
    assert old != new, f"step 5: two distinct bundles expected, got {old} twice"
    if flows.models_of(backend, project.id)["current"] != new:
        # The gate kept the first bundle (the second was not strictly better): roll forward by hand first.
        promote(stack, backend, project, new)
    promote(stack, backend, project, old)
    listing = flows.models_of(backend, project.id)
    assert listing["current"] == old, f"step 5: {listing}"
    # LS 1.23.2 asks GET /versions without saying which project, so its list cannot name the bundles;
    # it must still answer (a 4xx/5xx there breaks the model card's version picker).
    versions = stack.api.client.get(f"/api/ml/{project.ml_backend['id']}/versions")
    assert versions.status_code == 200 and versions.json().get("versions"), f"step 5: {versions.text}"


# --- helpers -----------------------------------------------------------------------------------------


def promote(stack: Stack, backend: httpx.Client, project: flows.CamtrapProject, version: str) -> None:
    response = backend.post(f"/models/{version}/promote", params={"project": project.id})
    assert response.status_code == 200, f"promote {version} -> {response.status_code} {response.text}"
    flows.wait_for_version(stack, backend, project, response.json()["model_version"])
