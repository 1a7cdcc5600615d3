"""``camtrap import-md`` -> ``camtrap export --format md``: a MegaDetector run through the store and back.

Against the fake Label Studio (tests/trainer/fake_label_studio.py: tasks, export, predictions); both
files pass megadetector's own ``validate_batch_results``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from megadetector.postprocessing.validate_batch_results import validate_batch_results

from backend.contracts.detection_store import DetectionStore, content_key, detector_key
from backend.contracts.registry import detector_id
from tests.backend.fake_ls import serve_in_thread
from tests.trainer.fake_label_studio import TOKEN, FakeProject, synthetic_project
from tests.trainer.recipe import camtrap
from trainer.import_md import match_entries

DETECTOR = "md_v5a.0.0.pt"


def _md_file(files: list[str]) -> dict:
    images = [
        {
            "file": file,
            "detections": [
                {"category": "1", "conf": 0.912, "bbox": [0.1 + 0.01 * i, 0.2, 0.3, 0.4]},
                {"category": "2", "conf": 0.6, "bbox": [0.5, 0.5, 0.2, 0.25]},
            ],
        }
        for i, file in enumerate(files)
    ]
    return {
        "info": {"format_version": "1.4", "detector": DETECTOR, "detection_completion_time": "2026-11-01 10:00:00"},
        "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
        "images": images,
    }


@pytest.fixture
def project(tmp_path: Path) -> FakeProject:
    fake = synthetic_project(tmp_path / "photos", per_species=2)
    # One task as a browser upload names it: <8 hex>-<name>.
    shutil.copy(tmp_path / "photos" / "blue_jay_0.jpg", tmp_path / "photos" / "1a2b3c4d-blue_jay_0.jpg")
    task = next(t for t in fake.tasks if t["data"]["image"].endswith("/blue_jay_0.jpg"))
    task["data"]["image"] = task["data"]["image"].replace("blue_jay_0.jpg", "1a2b3c4d-blue_jay_0.jpg")
    return fake


def test_import_md_then_export_md_round_trips_through_the_validator(tmp_path: Path, project: FakeProject) -> None:
    names = sorted(Path(t["data"]["image"]).name.removeprefix("1a2b3c4d-") for t in project.tasks)
    files = [f"cam{i % 2}/{name}" for i, name in enumerate(names)] + ["cam9/not_in_project.jpg"]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_md_file(files)))
    assert validate_batch_results(str(results))["validation_results"]["errors"] == []
    with serve_in_thread(project.app()) as url:
        env = {"LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": TOKEN}
        done = camtrap(["import-md", str(results), "--project", "2"], tmp_path, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads(done.stdout)
        assert report["matched"] == len(names) == report["stored"] == report["posted"]
        assert report["unmatched"] == ["cam9/not_in_project.jpg"]
        posted = {p["task"]: p for p in project.predictions}
        assert sorted(posted) == sorted(t["id"] for t in project.tasks)
        for task in project.tasks:  # Label Studio's JSON export lists prediction ids
            task["predictions"] = [i + 1 for i, p in enumerate(project.predictions) if p["task"] == task["id"]]
        exported = tmp_path / "exported.json"
        done = camtrap(["export", "--project", "2", "--format", "md", "-o", str(exported)], tmp_path, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    checked = validate_batch_results(str(exported))["validation_results"]
    assert checked["errors"] == []
    out = json.loads(exported.read_text())
    imported = {Path(i["file"]).name: i for i in _md_file(files)["images"]}
    assert sorted(Path(i["file"]).name for i in out["images"]) == names
    for image in out["images"]:
        model = [d for d in image["detections"] if d.get("source") != "human"]
        human = [d for d in image["detections"] if d.get("source") == "human"]
        source = imported[Path(image["file"]).name]["detections"]
        assert [(d["category"], d["conf"]) for d in model] == [(d["category"], d["conf"]) for d in source]
        for got, want in zip(model, source, strict=True):
            assert got["bbox"] == pytest.approx(want["bbox"], abs=1e-4)
        assert len(human) == 1 and human[0]["conf"] == 1.0  # the annotator's box, marked
        label = out["classification_categories"][human[0]["classifications"][0][0]]
        task = next(t for t in project.tasks if Path(t["data"]["image"]).name.endswith(Path(image["file"]).name))
        assert label == task["annotations"][0]["result"][1]["value"]["choices"][0]
    store = DetectionStore.under(tmp_path / "data")
    key = detector_key(detector_id(DETECTOR), None)
    assert store.count(key) == len(names)
    stored = store.get(content_key((tmp_path / "photos" / "1a2b3c4d-blue_jay_0.jpg").read_bytes()), key)
    assert stored is not None and [d["conf"] for d in stored.detections] == [0.912, 0.6]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda doc: doc["info"].update(format_version="0.9"), "format_version 0.9"),
        (lambda doc: doc["images"][1]["detections"][0].update(bbox=[0.1, 0.2, 0.3]), "images[1] (cam1/"),
        (lambda doc: doc["images"][2]["detections"][1].update(bbox=[0.9, 0.5, 0.5, 0.2]), "images[2] (cam0/"),
        (lambda doc: doc.update(images={"a.jpg": []}), "no 'images' list"),
    ],
)
def test_a_bad_file_is_refused_naming_the_entry_and_nothing_is_imported(
    tmp_path: Path, project: FakeProject, change, message: str
) -> None:
    document = _md_file([f"cam{i % 2}/{Path(t['data']['image']).name}" for i, t in enumerate(project.tasks)])
    change(document)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(document))
    with serve_in_thread(project.app()) as url:
        env = {"LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": TOKEN}
        done = camtrap(["import-md", str(results), "--project", "2"], tmp_path, env=env)
    assert done.returncode == 1
    assert message in done.stderr
    assert project.predictions == []
    assert not (tmp_path / "data" / "detections").exists()


def test_matching_by_path_then_by_unique_name() -> None:
    tasks = [
        (1, "/data/local-files/?d=site%20A/cam1/IMG_1.jpg"),
        (2, "/data/upload/3/0badcafe-IMG_2.jpg"),
        (3, "/data/local-files/?d=site%20B/cam1/IMG_1.jpg"),
        (4, "/data/upload/3/deadbeef-IMG_9.jpg"),
        (5, "/data/upload/3/feedf00d-IMG_9.jpg"),
    ]
    images = [{"file": "site B\\cam1\\IMG_1.jpg"}, {"file": "elsewhere/IMG_2.jpg"}, {"file": "IMG_9.jpg"}]
    matched = match_entries(images, tasks)
    assert matched == {3: images[0], 2: images[1]}  # IMG_9.jpg names two tasks: not matched by name
