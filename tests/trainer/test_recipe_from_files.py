"""The comvis "Stage 3" recipe from files alone, on the shared ENA24 photos:

``camtrap detect`` (MegadetectorLite) -> ``camtrap crops`` -> a Label Studio CSV export of the crops
-> ``scripts/train_classifier.sh BASE``
-> ``scripts/run_classifier.sh logs/model.pt CROPS`` -> ``logs/model_results.csv``; and ``model.pt`` run by
MegaDetector's own ``run_classifier.py`` in a process that never imports this project.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from backend.formats.crop_names import source_image
from backend.labelstudio.references import upload_safe_name
from tests.backend.formats.ls_exports import annotation, csv_export, task
from tests.trainer.recipe import MDLITE_ENV, REPO, TINY_TRAIN, camtrap, run

pytestmark = pytest.mark.slow

#: Loads model.pt with torch alone and says which of this project's packages got imported (none may).
FRESH_LOAD = """
import sys, torch
model = torch.jit.load(sys.argv[1])
x = torch.zeros(2, 3, 224, 224)
probs = model(x).softmax(dim=1)
print(list(probs.shape), sorted(m for m in sys.modules if m.split(".")[0] in ("backend", "trainer")))
"""


def _label_studio_csv(base: Path, crops: list[str], species_of: dict[str, str]) -> Path:
    """A CSV export of a classification project over the uploaded crops: one annotator each, a second one
    (who agrees) on every third crop, and one crop skipped."""
    tasks = []
    for i, crop in enumerate(crops, start=1):
        image = f"/data/upload/1/{i:08x}-{upload_safe_name(Path(crop).name)}"
        label = species_of[Path(source_image(crop)).name]
        annotations = [annotation(1000 + i, 1, [label], f"2026-01-01T10:{i % 60:02d}:00Z")]
        if i % 3 == 0:
            annotations.append(annotation(2000 + i, 2, [label], f"2026-01-02T10:{i % 60:02d}:00Z"))
        if i == 1:
            annotations = [annotation(1000 + i, 1, [label], "2026-01-01T10:00:00Z", cancelled=True)]
        tasks.append(task(i, image, annotations))
    return csv_export(tasks, sorted(set(species_of.values())), base)


def test_recipe_detect_crops_csv_train_classify(ena24_dir: Path, ena24_labels: dict[str, str], tmp_path: Path) -> None:
    from megadetector.postprocessing.validate_batch_results import validate_batch_results

    work = tmp_path / "work"
    base = work / "BASE"
    base.mkdir(parents=True)
    detections = work / "detections.json"
    done = camtrap(["detect", str(ena24_dir), "-o", str(detections), "--threshold", "0.05"], work, env=MDLITE_ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(image["file"] for image in json.loads(detections.read_text())["images"]) == sorted(ena24_labels)
    assert validate_batch_results(str(detections))["validation_results"]["errors"] == []

    done = camtrap(
        ["crops", str(detections), "-o", "BASE/crops", "--images-root", str(ena24_dir), "--threshold", "0.2"], work
    )
    assert done.returncode == 0, done.stderr[-2000:]
    crops = sorted(p.relative_to(base / "crops").as_posix() for p in (base / "crops").rglob("*.jpg"))
    assert len(crops) >= 14 and json.loads(done.stdout)["crops_written"] == len(crops)
    _label_studio_csv(base, crops, ena24_labels)

    done = run([str(REPO / "scripts" / "train_classifier.sh"), "BASE", *TINY_TRAIN], work)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout)
    logs = work / "logs"
    # the recipe's files are the model just trained; the gate's verdict (tiny data: often "rejected") is reported
    assert outcome["status"] in ("promoted", "rejected") and outcome["reason"]
    labels = json.loads((logs / "label_correspondance.json").read_text())
    assert sorted(labels.values()) == sorted(set(ena24_labels.values()))
    assert json.loads((logs / "label_index.json").read_text()) == labels
    assert (logs / "confusion_matrix.png").stat().st_size > 0 and list(logs.glob("events.out.tfevents.*"))
    metrics = json.loads((logs / "metrics.json").read_text())
    assert metrics["export"]["tasks"] == len(crops) - 1, "the skipped crop is left out"
    assert metrics["split"]["grouping"] == "photo", "no location column: the crops of one photo stay together"
    assert "no location column" in done.stderr

    done = run([str(REPO / "scripts" / "run_classifier.sh"), "logs/model.pt", "BASE/crops"], work)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(logs / "model_results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    classes = [labels[str(i)] for i in range(len(labels))]
    assert list(rows[0]) == ["path", "label", "score", *classes]
    assert sorted(r["path"].removeprefix("./") for r in rows) == crops
    for row in rows:
        probs = [float(row[c]) for c in classes]
        assert abs(sum(probs) - 1) < 1e-3 and row["label"] == max(classes, key=lambda c: float(row[c]))
        assert float(row["score"]) == pytest.approx(max(probs), abs=1e-6)

    # model.pt needs torch only: a fresh interpreter that never imports backend or trainer
    fresh = run([sys.executable, "-I", "-c", FRESH_LOAD, str(logs / "model.pt")], tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert fresh.stdout.split("] ")[1].strip() == "[]"
    assert fresh.stdout.startswith(f"[2, {len(classes)}]")

    # ... and MegaDetector's own run_classifier.py takes it as the recipe's run_classifier.sh does
    theirs = work / "md_results.csv"
    done = run(
        [
            sys.executable,
            "-m",
            "megadetector.classification.run_classifier",
            str(logs / "model.pt"),
            str(base / "crops"),
            str(theirs),
            "--classifier-categories",
            str(logs / "label_correspondance.json"),
            "--image-size",
            "32",
            "--num-workers",
            "0",
        ],
        work,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with open(theirs, newline="") as handle:
        md_rows = {r["path"]: r for r in csv.DictReader(handle)}
    assert set(md_rows) == {r["path"] for r in rows}, "same path column as run_classifier.py"
    agree = sum(max(classes, key=lambda c: float(md_rows[r["path"]][c])) == r["label"] for r in rows)
    assert agree >= 0.8 * len(rows), "run_classifier.py's bicubic resize barely moves the top-1"
