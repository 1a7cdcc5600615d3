"""What a lab admin and an annotator do in Label Studio, as REST calls (shared by the e2e tests)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from backend.contracts.keys import RedisKeys
from tests.e2e.conftest import Stack
from tests.e2e.lsapi import LabelStudioAPI
from tests.processes import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
LABEL_CONFIG = REPO_ROOT / "label_config.xml"
#: Camera sites given to the photos (the trainer splits by the task's ``location`` field).
SITES = ("site-north", "site-creek", "site-ridge")
BOX_LABELS = {"animal", "person", "vehicle"}
JOB_TIMEOUT_S = 600.0
VERSION_SWAP_TIMEOUT_S = 30.0
TERMINAL_JOB_STATES = {"finished", "failed", "stopped", "canceled"}


@dataclass(frozen=True)
class Photo:
    path: Path
    species: str
    location: str

    @property
    def size(self) -> tuple[int, int]:
        with Image.open(self.path) as image:
            return image.size


@dataclass
class CamtrapProject:
    id: int
    species: list[str]
    photos: dict[int, Photo] = field(default_factory=dict)
    """Task id -> the photo it shows."""
    ml_backend: dict[str, Any] | None = None

    def task_ids(self, species: set[str] | None = None) -> list[int]:
        return sorted(t for t, p in self.photos.items() if species is None or p.species in species)


def shared_photos(ena24_dir: Path, labels: dict[str, str]) -> list[Photo]:
    """The shared ENA24 photos, each species' photos spread over the three sites."""
    by_species: dict[str, list[str]] = defaultdict(list)
    for name, species in sorted(labels.items()):
        by_species[species].append(name)
    return [
        Photo(ena24_dir / name, species, SITES[i % len(SITES)])
        for species in sorted(by_species)
        for i, name in enumerate(by_species[species])
    ]


def label_config_with_species(species: list[str], box_labels: set[str] | None = None) -> str:
    """Our label_config.xml adapted as a project would: its own species list and, optionally, only
    some of the box labels (the backend drops detections of categories the config lacks)."""
    root = ET.fromstring(LABEL_CONFIG.read_text())
    choices = [c for c in root.iter("Choices") if c.get("perRegion") == "true"]
    assert len(choices) == 1, f"label_config.xml should have one per-region Choices (species), found {len(choices)}"
    for child in list(choices[0]):
        choices[0].remove(child)
    for name in species:
        ET.SubElement(choices[0], "Choice", value=name)
    if box_labels is not None:
        for rectangle in root.iter("RectangleLabels"):
            for label in list(rectangle):
                if label.get("value") not in box_labels:
                    rectangle.remove(label)
    return ET.tostring(root, encoding="unicode")


def new_project(
    api: LabelStudioAPI, title: str, photos: list[Photo], box_labels: set[str] | None = None
) -> CamtrapProject:
    """Create an empty project from label_config.xml, its species those of ``photos`` (imported later)."""
    species = sorted({p.species for p in photos})
    project = api.create_project(title, label_config_with_species(species, box_labels))
    return CamtrapProject(id=project["id"], species=species)


def import_photos(api: LabelStudioAPI, project: CamtrapProject, photos: list[Photo]) -> None:
    """Upload the photos (one task each) and give each task its camera ``location``."""
    imported = api.import_images(project.id, [p.path for p in photos])
    assert imported.get("task_count") == len(photos), f"import of {len(photos)} photos answered {imported}"
    by_name = {p.path.name: p for p in photos}
    for task in api.tasks(project.id):
        image = task["data"]["image"]
        # Uploaded files are stored as /data/upload/<project>/<8 hex>-<original name>.
        name = image.rsplit("/", 1)[-1].split("-", 1)[-1]
        assert name in by_name, f"task {task['id']} shows {image}, which is none of the uploaded photos"
        photo = by_name.pop(name)
        api.update_task_data(task["id"], {**task["data"], "location": photo.location})
        project.photos[task["id"]] = photo
    assert not by_name, f"photos without a task after the import: {sorted(by_name)}"
    for task in api.tasks(project.id):
        assert task["data"].get("location") == project.photos[task["id"]].location, f"task {task['id']}: {task['data']}"


def create_project(
    api: LabelStudioAPI, title: str, photos: list[Photo], box_labels: set[str] | None = None
) -> CamtrapProject:
    """Create the project from label_config.xml (species = those of ``photos``), upload the photos and
    give each task its camera ``location``."""
    project = new_project(api, title, photos, box_labels)
    import_photos(api, project, photos)
    return project


#: The box an annotator draws where the prediction has no animal box (percent of the image).
DRAWN_BOX = {"x": 18.0, "y": 22.0, "width": 55.0, "height": 50.0, "rotation": 0}


def annotation_result(photo: Photo, region_id: str, prediction: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """What the editor saves when an annotator keeps the prediction's top animal box (or, when it has none,
    draws one) and picks its species."""
    width, height = photo.size
    animal = [b for b in boxes(prediction) if "animal" in b["value"]["rectanglelabels"]] if prediction else []
    if animal:
        top = max(animal, key=lambda b: b.get("score") or 0)
        geometry = {key: top["value"][key] for key in ("x", "y", "width", "height")} | {"rotation": 0}
    else:
        geometry = dict(DRAWN_BOX)
    common = {
        "id": region_id,
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "origin": "manual",
    }
    return [
        {**common, "from_name": "box", "type": "rectanglelabels", "value": {**geometry, "rectanglelabels": ["animal"]}},
        {**common, "from_name": "species", "type": "choices", "value": {**geometry, "choices": [photo.species]}},
    ]


def boxes(prediction: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in prediction["result"] if r["type"] == "rectanglelabels"]


def species_results(prediction: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in prediction["result"] if r["type"] == "choices" and r["from_name"] == "species"]


def predictions_by_task(api: LabelStudioAPI, project_id: int) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for prediction in api.predictions(project_id):
        grouped[prediction["task"]].append(prediction)
    return dict(grouped)


def check_boxes(prediction: dict[str, Any], where: str) -> None:
    """Every box is a label of the config with coordinates inside the image, as LS must store them."""
    for region in boxes(prediction):
        value = region["value"]
        assert value["rectanglelabels"] and set(value["rectanglelabels"]) <= BOX_LABELS, f"{where}: {region}"
        for key in ("x", "y", "width", "height"):
            assert 0 <= value[key] <= 100, f"{where}: {key}={value[key]} outside [0, 100] in {region}"
        assert value["x"] + value["width"] <= 100.001 and value["y"] + value["height"] <= 100.001, f"{where}: {region}"
        assert region["from_name"] == "box" and region["to_name"] == "image", f"{where}: {region}"
        assert region.get("id"), f"{where}: a box without an id cannot carry a species: {region}"


# --- steps shared by the scenarios (tests/e2e/test_loop.py, test_detect_once.py) -------------------------


def connect_backend(stack: Stack, project: CamtrapProject) -> CamtrapProject:
    """Settings -> Model -> Connect Model with our backend, then the secret header on the webhook LS creates."""
    api = stack.api
    ml = api.connect_ml_backend(
        project.id, stack.backend.url, "Camtrap MegaDetector", basic_auth=stack.backend.basic_auth
    )
    assert ml["state"] == "CO", f"connect: LS did not connect the backend: {ml}"
    assert ml["model_version"].endswith("+none"), f"connect: an untrained project should serve +none: {ml}"
    project.ml_backend = ml
    # LS registered <backend>/webhook for every project event; it sends no credentials unless told to.
    hook_url = f"{stack.backend.url}/webhook"
    hooks = [h for h in api.webhooks(project.id) if h["url"].rstrip("/") == hook_url]
    assert len(hooks) == 1, f"connect: expected LS to create the webhook {hook_url}, found {api.webhooks(project.id)}"
    if stack.backend.webhook_secret:
        updated = api.update_webhook(hooks[0], headers={"X-Webhook-Secret": stack.backend.webhook_secret})
        assert updated["headers"] == {"X-Webhook-Secret": stack.backend.webhook_secret}, f"connect: {updated}"
    return project


def annotate_species(stack: Stack, project: CamtrapProject, count: int) -> set[int]:
    """Annotate the photos of the first ``count`` species: one box with its species each, starting from the
    task's prediction (its top animal box kept); each submit must reach the backend's webhook counter."""
    api = stack.api
    species = set(project.species[:count])
    predictions = predictions_by_task(api, project.id)
    annotated = set(project.task_ids(species))
    for task_id in sorted(annotated):
        photo = project.photos[task_id]
        api.create_annotation(
            task_id,
            annotation_result(photo, f"box-{task_id}", predictions[task_id][0]),
            parent_prediction=predictions[task_id][0]["id"],
        )
    tasks = {t["id"]: t for t in api.tasks(project.id)}
    labeled = {t for t, task in tasks.items() if task["total_annotations"] > 0}
    assert labeled == annotated, f"annotate: labeled tasks {sorted(labeled)}, expected {sorted(annotated)}"
    # Each submit reached /webhook (through the secret header in PAT mode) and was counted.
    key = RedisKeys().pending(str(project.id))
    wait_until(
        lambda: int(redis_of(stack).get(key) or 0) == len(annotated),
        timeout=10,
        processes=stack.processes,
        what=f"the backend to count {len(annotated)} annotations from the webhook (deliveries lost?)",
    )
    return annotated


def redis_of(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.redis_url)


def metric_value(backend: httpx.Client, sample: str, **labels: str) -> float:
    """The sum of the backend's ``/metrics`` samples named ``sample`` whose labels include ``labels`` (0 if none).

    With ``camtrap serve`` and ``camtrap worker`` sharing ``DATA_DIR``, that is the sum over every uvicorn
    worker and every RQ work horse (prometheus-client's multiprocess mode).
    """
    response = backend.get("/metrics")
    assert response.status_code == 200, f"GET /metrics -> {response.status_code} {response.text[:500]}"
    return sum(
        value.value
        for family in text_string_to_metric_families(response.text)
        for value in family.samples
        if value.name == sample and labels.items() <= value.labels.items()
    )


def job_info(backend: httpx.Client, job_id: str) -> dict[str, Any]:
    response = backend.get(f"/jobs/{job_id}")
    assert response.status_code == 200, f"GET /jobs/{job_id} -> {response.status_code} {response.text}"
    return response.json()


def wait_for_job(stack: Stack, backend: httpx.Client, job_id: str) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until the job ends; fail with its last state and the worker's log."""
    seen: list[str] = []

    def ended() -> dict[str, Any] | None:
        info = job_info(backend, job_id)
        stage = f"{info['status']}:{info.get('stage')}"
        if not seen or seen[-1] != stage:
            seen.append(stage)
        return info if info["status"] in TERMINAL_JOB_STATES else None

    started = time.monotonic()
    info = wait_until(ended, timeout=JOB_TIMEOUT_S, what=f"job {job_id}", processes=stack.processes, interval=1.0)
    print(f"{job_id}: {' -> '.join(seen)} in {time.monotonic() - started:.0f} s")  # noqa: T201 - timing in -s runs
    return info


def models_of(backend: httpx.Client, project_id: int) -> dict[str, Any]:
    response = backend.get("/models", params={"project": project_id})
    assert response.status_code == 200, f"GET /models -> {response.status_code} {response.text}"
    return response.json()["projects"][str(project_id)]


def wait_for_version(stack: Stack, backend: httpx.Client, project: CamtrapProject, version: str) -> None:
    """Every backend process reports ``version`` in /setup, and LS's model card shows it."""
    setup = {"project": f"{project.id}.0", "schema": stack.api.project(project.id)["label_config"]}

    def all_workers_agree() -> bool:
        # Several requests spread over the uvicorn workers; all must answer the new version.
        return all(backend.post("/setup", json=setup).json()["model_version"] == version for _ in range(8))

    wait_until(
        all_workers_agree,
        timeout=VERSION_SWAP_TIMEOUT_S,
        what=f"every backend worker to serve {version}",
        processes=stack.processes,
    )
    seen = stack.api.ml_backend(project.ml_backend["id"])
    assert seen["model_version"] == version, f"LS's model card shows {seen['model_version']}, expected {version}"
