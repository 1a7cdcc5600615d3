"""``camtrap export --project N``: human labels and model predictions, each marked, as CSV and COCO Camera Traps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from backend.formats.coco import read_coco
from tests.backend.fake_ls import serve_in_thread
from tests.trainer.fake_label_studio import TOKEN, synthetic_project
from tests.trainer.recipe import camtrap


def _prediction(prediction_id: int, task_id: int, species: str, version: str, created: str) -> dict:
    region = f"md-{prediction_id}"
    box = {"x": 20.0, "y": 20.0, "width": 60.0, "height": 60.0, "rotation": 0}
    geometry = {"original_width": 160, "original_height": 120, "image_rotation": 0, "to_name": "image", "id": region}
    return {
        "id": prediction_id,
        "task": task_id,
        "model_version": version,
        "created_at": created,
        "result": [
            {
                **geometry,
                "from_name": "label",
                "type": "rectanglelabels",
                "value": {**box, "rectanglelabels": ["animal"]},
                "score": 0.91,
            },
            {
                **geometry,
                "from_name": "species",
                "type": "choices",
                "value": {**box, "choices": [species]},
                "score": 0.77,
            },
        ],
    }


def test_export_marks_human_labels_and_model_predictions(tmp_path: Path) -> None:
    fake = synthetic_project(tmp_path / "photos", per_species=2)
    fake.predictions = [
        _prediction(1, 1, "Blue Jay", "p2-old", "2026-11-01T00:00:00Z"),
        _prediction(2, 1, "Red Deer", "p2-new", "2026-11-02T00:00:00Z"),
    ]
    fake.tasks[0]["predictions"] = [1, 2]  # Label Studio's JSON export lists prediction ids
    with serve_in_thread(fake.app()) as url:
        env = {"LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": TOKEN}
        done = camtrap(["export", "--project", "2", "--format", "csv", "-o", "labels.csv"], tmp_path, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        coco = camtrap(["export", "--project", "2", "--format", "coco", "-o", "labels_coco.json"], tmp_path, env=env)
        assert coco.returncode == 0, coco.stderr[-2000:]
    assert json.loads(done.stdout)["observations"] == {"human": 6, "model": 1}
    with open(tmp_path / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    human = [r for r in rows if r["source"] == "human"]
    [model] = [r for r in rows if r["source"] == "model"]
    assert {r["label"] for r in human} == {"Red Deer", "Green Frog", "Blue Jay"}
    assert (human[0]["x"], human[0]["width"], human[0]["location"]) == ("0.2000", "0.6000", "site-0")
    assert (model["task_id"], model["label"], model["score"], model["model_version"]) == (
        "1",
        "Red Deer",
        "0.7700",
        "p2-new",
    )
    dataset = read_coco(tmp_path / "labels_coco.json")
    raw = json.loads((tmp_path / "labels_coco.json").read_text())
    assert [a["source"] for a in raw["annotations"]].count("model") == 1
    assert dataset.categories[0] == "empty"
    first = dataset.annotations[0]
    assert first.bbox == (200.0, 150.0, 600.0, 450.0), "absolute pixels of the size the annotation gives (1000x750)"


def test_export_says_when_label_studio_is_down(tmp_path: Path) -> None:
    env = {"LABEL_STUDIO_URL": "http://127.0.0.1:9", "LABEL_STUDIO_API_KEY": TOKEN}
    done = camtrap(["export", "--project", "2", "--format", "csv", "-o", "labels.csv"], tmp_path, env=env)
    assert done.returncode == 1 and "cannot export project 2 from Label Studio" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "labels.csv").exists()
