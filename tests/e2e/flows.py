"""What a lab admin and an annotator do in Label Studio, as REST calls (shared by the e2e tests)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from tests.e2e.lsapi import LabelStudioAPI

REPO_ROOT = Path(__file__).resolve().parents[2]
LABEL_CONFIG = REPO_ROOT / "label_config.xml"
#: Camera sites given to the photos (the trainer splits by the task's ``location`` field).
SITES = ("site-north", "site-creek", "site-ridge")
BOX_LABELS = {"animal", "person", "vehicle"}


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


def create_project(
    api: LabelStudioAPI, title: str, photos: list[Photo], box_labels: set[str] | None = None
) -> CamtrapProject:
    """Create the project from label_config.xml (species = those of ``photos``), upload the photos and
    give each task its camera ``location``."""
    species = sorted({p.species for p in photos})
    project = api.create_project(title, label_config_with_species(species, box_labels))
    imported = api.import_images(project["id"], [p.path for p in photos])
    assert imported.get("task_count") == len(photos), f"import of {len(photos)} photos answered {imported}"
    by_name = {p.path.name: p for p in photos}
    result = CamtrapProject(id=project["id"], species=species)
    for task in api.tasks(project["id"]):
        image = task["data"]["image"]
        # Uploaded files are stored as /data/upload/<project>/<8 hex>-<original name>.
        name = image.rsplit("/", 1)[-1].split("-", 1)[-1]
        assert name in by_name, f"task {task['id']} shows {image}, which is none of the uploaded photos"
        photo = by_name.pop(name)
        api.update_task_data(task["id"], {**task["data"], "location": photo.location})
        result.photos[task["id"]] = photo
    assert not by_name, f"photos without a task after the import: {sorted(by_name)}"
    for task in api.tasks(project["id"]):
        assert task["data"].get("location") == result.photos[task["id"]].location, f"task {task['id']}: {task['data']}"
    return result


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
