"""``camtrap import-coco``: an Animl-shaped COCO file over the ENA24 photos into a training folder (then
``camtrap train BASE``) or into a Label Studio project (the fake one, read back by the training export)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from backend.config import Settings
from backend.formats.coco import read_coco
from backend.labelstudio.client import LabelStudioClient
from tests.backend.fake_ls import serve_in_thread
from tests.backend.formats.animl import AnimlImage, animl_coco
from tests.trainer.fake_label_studio import TOKEN, FakeProject, label_config
from tests.trainer.recipe import TINY_TRAIN, camtrap
from trainer.export import parse_export

DEPLOYMENTS = ["North Ridge", "South Gully", "East Creek"]
#: TrapTagger's flavour: dataset_labels only, lower-cased originals, every dataset listed; Chicken left out.
LABEL_SPEC = {
    "opossum": {"dataset_labels": {"animl": ["virginia opossum"], "other": []}},
    "squirrel": {"dataset_labels": {"animl": ["eastern fox squirrel"], "other": []}},
    "bear": {"dataset_labels": {"animl": ["american black bear"], "other": []}},
    "crow": {"dataset_labels": {"animl": ["american crow"], "other": []}},
    "skunk": {"dataset_labels": {"animl": ["striped skunk"], "other": []}},
    "fox": {"dataset_labels": {"animl": ["grey fox"], "other": []}},
}


def _animl_folder(ena24_dir: Path, labels: dict[str, str], root: Path) -> tuple[Path, list[AnimlImage]]:
    """The photos laid out as Animl names them, and their COCO file: boxes over the central 80 % (absolute,
    integer), two photos labelled without a box, one extra photo marked empty, one never annotated, one missing."""
    by_species: dict[str, list[str]] = {}
    for name, species in sorted(labels.items()):
        by_species.setdefault(species, []).append(name)
    images = []
    count = 0
    for species, names in sorted(by_species.items()):
        for i, name in enumerate(names):
            with Image.open(ena24_dir / name) as photo:
                width, height = photo.size
            box = (width // 10, height // 10, width * 8 // 10, height * 8 // 10)
            no_box = count in (4, 11)
            image = AnimlImage(
                f"h{count:03d}",
                DEPLOYMENTS[i % 3],
                None if no_box else width,
                None if no_box else height,
                [(species, None if no_box else box)],
            )
            images.append(image)
            (root / image.file_name).parent.mkdir(parents=True, exist_ok=True)
            (root / image.file_name).write_bytes((ena24_dir / name).read_bytes())
            count += 1
    spare = sorted(labels)[0]
    with Image.open(ena24_dir / spare) as photo:
        width, height = photo.size
    extra = [
        AnimlImage("empty1", "North Ridge", width, height, [("empty", None)]),
        AnimlImage("none1", "South Gully", width, height, []),
        AnimlImage("gone1", "East Creek", width, height, [("Grey Fox", (1, 1, 50, 50))]),
    ]
    for image in extra[:2]:
        (root / image.file_name).parent.mkdir(parents=True, exist_ok=True)
        (root / image.file_name).write_bytes((ena24_dir / spare).read_bytes())
    images += extra
    coco = root / "animl_coco.json"
    coco.write_text(json.dumps(animl_coco(images, ["empty", *sorted(by_species)]), indent=4))
    return coco, images


@pytest.mark.slow
def test_import_coco_then_train(
    ena24_dir: Path, ena24_labels: dict[str, str], tmp_path: Path, tiny_detector_path: Path
) -> None:
    photos = tmp_path / "photos"
    coco, _ = _animl_folder(ena24_dir, ena24_labels, photos)
    spec = tmp_path / "label_spec.json"
    spec.write_text(json.dumps(LABEL_SPEC, separators=(",", ":")))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    env = {"DETECTOR_MODEL": str(tiny_detector_path), "CLASSIFY_THRESHOLD": "0.0", "DETECTOR_DEVICE": "cpu"}
    done = camtrap(
        ["import-coco", str(coco), "--images", str(photos), "-o", "BASE", "--label-spec", str(spec)], tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["images"] == 24 and report["images_empty"] == 1 and report["images_without_annotation"] == 1
    assert report["images_missing"] == ["proj1/cam42/east_creek/proj1-gone1.jpg"]
    assert report["dropped"]["label_not_in_label_spec"] == 3, "Chicken is not in the spec"
    assert report["crops"] == {"human": 16, "detector": 2}, "two photos had no box: the detector's top box"
    assert "missing under" in done.stderr
    base = tmp_path / "BASE"
    with open(base / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["label"] for r in rows} == set(LABEL_SPEC)
    assert {r["location"] for r in rows} == set(DEPLOYMENTS)
    assert all((base / "crops" / r["path"]).is_file() for r in rows)
    assert any(r["path"].endswith("___crop00.jpg") for r in rows)
    assert sum(r["path"].endswith("___crop00_tiny_md_v5.pt.jpg") for r in rows) == 2
    assert not list(base.glob(".*")), "no staging folder left"

    done = camtrap(["train", "BASE", *TINY_TRAIN], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout)
    # a 2-epoch model on 18 crops rarely beats the majority baseline: the honest gate may refuse it (issue 10)
    assert outcome["status"] in ("promoted", "rejected") and outcome["reason"]
    metrics = json.loads((base / "logs" / "metrics.json").read_text())
    assert metrics["split"]["grouping"] == "location"
    assert sorted(json.loads((base / "logs" / "label_index.json").read_text()).values()) == sorted(LABEL_SPEC)

    again = camtrap(["import-coco", str(coco), "--images", str(photos), "-o", "BASE"], tmp_path, env=env)
    assert again.returncode == 1 and "already holds crops/ or labels.csv" in again.stderr


def test_keep_empty_and_unknown_labels_in_a_project(
    ena24_dir: Path, ena24_labels: dict[str, str], tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    coco, images = _animl_folder(ena24_dir, ena24_labels, photos)
    species = sorted(set(ena24_labels.values()) - {"Chicken"})
    fake = FakeProject(project=5, image_dir=photos, species=set(species))
    with serve_in_thread(fake.app()) as url:
        env = {"LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": TOKEN}
        args = ["import-coco", str(coco), "--images", str(photos), "--project", "5"]
        refused = camtrap(args, tmp_path, env=env)
        assert refused.returncode == 1
        assert "label 'Chicken'" in refused.stderr and "is not a species of the project" in refused.stderr
        assert fake.tasks == [], "nothing is created when a label is unknown"

        fake.species.add("Chicken")
        done = camtrap([*args, "--keep-empty"], tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["tasks_created"] == len(fake.tasks) == 22, "21 photos + the empty one; the missing one is listed"
    # what training will read back: the job's own export parser
    exported = parse_export(fake.tasks, label_config(fake.species), project="5", location_fields=["location"])
    species_tasks = [t for t in exported.tasks if not t.empty]
    assert len(species_tasks) == 21, "the empty image gives no species"
    assert [t.empty for t in exported.tasks].count(True) == 1, "it is kept as a photo marked empty (blank class)"
    assert {t.location for t in species_tasks} == set(DEPLOYMENTS)
    labelled = {t.image.rsplit("/", 1)[-1]: t for t in species_tasks}
    fox = next(i for i in images if i.labels and i.labels[0][1] is not None and i.width)
    task = labelled[Path(fox.file_name).name]
    assert task.boxes and task.boxes[0].species == fox.labels[0][0]
    assert task.boxes[0].bbox == pytest.approx((0.1, 0.1, 0.8, 0.8), abs=1e-3)
    assert sum(1 for t in species_tasks if not t.boxes and t.image_species) == 2, "no box: image-level species"
    assert all(t.image.startswith("/data/local-files/?d=proj1/cam42/") for t in exported.tasks)
    assert read_coco(coco).images  # the file itself is untouched


def test_reading_back_through_the_client(tmp_path: Path) -> None:
    """The client the command uses posts JSON to the import endpoint (the fake records it)."""
    fake = FakeProject(project=6, image_dir=tmp_path, species={"fox"})
    with (
        serve_in_thread(fake.app()) as url,
        LabelStudioClient(Settings(label_studio_url=url, label_studio_api_key=TOKEN)) as client,
    ):
        answer = client.post_json("/api/projects/6/import", [{"data": {"image": "a.jpg"}, "annotations": []}])
    assert answer["task_count"] == 1 and fake.tasks[0]["data"] == {"image": "a.jpg"}
