"""The fake Label Studio with a project in it: what the trainer uses (project, export, predictions).

:class:`FakeProject` is ``tests.backend.fake_ls.FakeLabelStudio`` (the same images, tokens and auth
rules) plus one project's tasks. Tasks are built from image files (the shared ENA24 photos, or
generated ones) with a ``location`` in their data, and annotations in Label Studio's export format: a
rectangle plus a per-region species choice sharing its id, or an image-level species choice only.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from PIL import Image, ImageDraw

from tests.backend.fake_ls import LEGACY_TOKEN, FakeLabelStudio

#: The API key the trainer and the backend use (a legacy token, accepted while legacy tokens are on).
TOKEN = LEGACY_TOKEN

LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="animal"/><Label value="person"/><Label value="vehicle"/>
  </RectangleLabels>
  <Choices name="species" toName="image" perRegion="true">
{choices}
  </Choices>
  <Choices name="image_species" toName="image">
{choices}
  </Choices>
  <Choices name="status" toName="image">
    <Choice value="empty"/><Choice value="animal present"/><Choice value="needs review"/>
  </Choices>
</View>"""


def label_config(species: Iterable[str]) -> str:
    return LABEL_CONFIG.format(choices="\n".join(f'    <Choice value="{s}"/>' for s in sorted(species)))


def box_annotation(annotation_id: int, species: str, box: tuple[float, float, float, float]) -> dict:
    """An annotation with one rectangle (percent x, y, w, h) and its per-region species."""
    x, y, w, h = box
    region = f"r{annotation_id}"
    return {
        "id": annotation_id,
        "was_cancelled": False,
        "ground_truth": False,
        "updated_at": "2026-11-20T10:00:00Z",
        "result": [
            {
                "id": region,
                "type": "rectanglelabels",
                "from_name": "label",
                "to_name": "image",
                "original_width": 1000,
                "original_height": 750,
                "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": ["animal"]},
            },
            {
                "id": region,
                "type": "choices",
                "from_name": "species",
                "to_name": "image",
                "value": {"x": x, "y": y, "width": w, "height": h, "choices": [species]},
            },
        ],
    }


def image_annotation(annotation_id: int, species: str) -> dict:
    """An annotation that names the species of the whole image only (no box), in the image-level control."""
    return {
        "id": annotation_id,
        "was_cancelled": False,
        "ground_truth": False,
        "updated_at": "2026-11-20T10:00:00Z",
        "result": [
            {
                "id": f"c{annotation_id}",
                "type": "choices",
                "from_name": "image_species",
                "to_name": "image",
                "value": {"choices": [species]},
            }
        ],
    }


@dataclass
class FakeProject(FakeLabelStudio):
    """A fake Label Studio holding one project: its tasks, image files and knobs for faults."""

    project: int = 1
    species: set[str] = field(default_factory=set)
    export_delay_s: float = 0.0
    """The export hangs this long (or until :meth:`release`), like a Label Studio that stopped answering."""
    export_calls: int = 0
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        """End every hanging export now."""
        self.released.set()

    def add_task(
        self,
        file_name: str,
        species: str,
        location: str | None,
        *,
        image_level: bool = False,
        box: tuple[float, float, float, float] = (10.0, 10.0, 80.0, 80.0),
    ) -> int:
        task_id = len(self.tasks) + 1
        data = {"image": f"/data/upload/{self.project}/{file_name}"}
        if location is not None:
            data["location"] = location
        annotation = (
            image_annotation(1000 + task_id, species) if image_level else box_annotation(1000 + task_id, species, box)
        )
        self.tasks.append({"id": task_id, "data": data, "annotations": [annotation], "predictions": []})
        self.species.add(species)
        return task_id

    def project_info(self, project: int) -> dict:
        return {"id": project, "title": "fake camera traps", "label_config": label_config(self.species)}

    def app(self) -> FastAPI:
        app = super().app()

        @app.get("/api/projects/{project}/export")
        def export(request: Request, project: int, exportType: str = "JSON") -> list[dict]:  # noqa: N803
            self.check(request)
            self.export_calls += 1
            if self.export_delay_s:
                self.released.wait(self.export_delay_s)
            return [t for t in self.tasks if t["annotations"]]

        @app.post("/api/projects/{project}/import")
        async def import_tasks(request: Request, project: int) -> dict:
            """Label Studio's JSON task import: tasks (with inline annotations) appended, counts answered."""
            self.check(request)
            body = await request.json()
            with self.lock:
                annotations = 0
                for item in body:
                    task_id = len(self.tasks) + 1
                    imported = [
                        {
                            "id": 5000 + task_id * 10 + k,
                            "was_cancelled": False,
                            "updated_at": "2026-11-20T10:00:00Z",
                            **a,
                        }
                        for k, a in enumerate(item.get("annotations") or [])
                    ]
                    annotations += len(imported)
                    self.tasks.append({"id": task_id, "data": item["data"], "annotations": imported, "predictions": []})
            return {"task_count": len(body), "annotation_count": annotations, "prediction_count": 0}

        return app


def ena24_project(
    ena24_dir: Path, labels: Mapping[str, str], *, project: int = 1, sites: int = 3, image_level: int = 0
) -> FakeProject:
    """The shared photos with invented locations: each species' photos are spread over ``sites`` sites.

    The photos have no boxes, so each gets a box over its central 80 % (the animal is usually there);
    the first ``image_level`` tasks are labelled at image level only (crop: the top MegaDetector box).
    """
    fake = FakeProject(project=project, image_dir=ena24_dir)
    by_species: dict[str, list[str]] = {}
    for name, species in sorted(labels.items()):
        by_species.setdefault(species, []).append(name)
    count = 0
    for species, names in sorted(by_species.items()):
        for i, name in enumerate(names):
            fake.add_task(name, species, f"site-{i % sites}", image_level=count < image_level)
            count += 1
    return fake


#: Colors of the synthetic "species": easy to tell apart, so a trained model beats an untrained one.
SYNTHETIC_SPECIES = {"Red Deer": (200, 40, 40), "Green Frog": (40, 180, 60), "Blue Jay": (40, 70, 210)}


def synthetic_project(
    directory: Path, *, per_species: int = 12, sites: int = 4, project: int = 2, seed: int = 0
) -> FakeProject:
    """Generated photos: a colored blob (the "species") on a noisy background, spread over ``sites``."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    fake = FakeProject(project=project, image_dir=directory)
    for species, color in SYNTHETIC_SPECIES.items():
        for i in range(per_species):
            name = f"{species.replace(' ', '_').lower()}_{i}.jpg"
            blob_image(directory / name, color, rng)
            fake.add_task(name, species, f"site-{i % sites}", box=(20.0, 20.0, 60.0, 60.0))
    return fake


def blob_image(path: Path, color: tuple[int, int, int], rng: random.Random) -> None:
    image = Image.new("RGB", (160, 120), tuple(rng.randint(90, 140) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    jitter = [max(0, min(255, c + rng.randint(-25, 25))) for c in color]
    draw.ellipse((40 + rng.randint(-6, 6), 30 + rng.randint(-6, 6), 120, 90), fill=tuple(jitter))
    image.save(path, quality=90)
