"""The learning rules through ``camtrap train BASE``: labels, the split over growing data, the gate's leak.

Each test writes a Label Studio JSON export of generated photos (a coloured blob per "species") and
runs ``camtrap train`` on it as a subprocess, as a user would.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.trainer.fake_label_studio import SYNTHETIC_SPECIES, blob_image, synthetic_project
from tests.trainer.folders import FOLDER_FLAGS, camtrap, folder_env, project_folder, write_folder

BOX = (20.0, 20.0, 60.0, 60.0)
#: A per-region ``sex`` control declared before ``species``, an image-level species, an outcome control.
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="animal"/><Label value="person"/><Label value="vehicle"/>
  </RectangleLabels>
  <Choices name="sex" toName="image" perRegion="true"><Choice value="female"/><Choice value="male"/></Choices>
  <Choices name="species" toName="image" perRegion="true">
    <Choice value="Red Deer"/><Choice value="Green Frog"/><Choice value="Blue Jay"/>
  </Choices>
  <Choices name="photo_species" toName="image">
    <Choice value="Red Deer"/><Choice value="Green Frog"/><Choice value="Blue Jay"/>
  </Choices>
  <Choices name="status" toName="image"><Choice value="empty"/><Choice value="animal present"/></Choices>
</View>"""


def _rectangle(region: str, box, label: str = "animal") -> dict:
    x, y, w, h = box
    return {
        "id": region,
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": 160,
        "original_height": 120,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]},
    }


def _choice(region: str, control: str, value: str) -> dict:
    return {"id": region, "type": "choices", "from_name": control, "to_name": "image", "value": {"choices": [value]}}


def _task(task_id: int, name: str, location: str, results: list[dict]) -> dict:
    return {
        "id": task_id,
        "data": {"image": f"/data/upload/9/{name}", "location": location},
        "annotations": [{"id": 10_000 + task_id, "result": results, "was_cancelled": False}],
        "predictions": [],
    }


def test_labels_follow_the_config_species_not_sex_case_variants_one_class_people_never_crops(tmp_path: Path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = random.Random(0)
    tasks: list[dict] = []

    def photo(species: str) -> str:
        name = f"p{len(tasks)}.jpg"
        blob_image(photos / name, SYNTHETIC_SPECIES[species], rng)
        return name

    for i in range(14):  # deer at 7 sites, every box also given a sex; half spelled in lower case
        spelled = "Red Deer" if i % 2 else "red deer"
        results = [_rectangle("r", BOX), _choice("r", "sex", "female"), _choice("r", "species", spelled)]
        tasks.append(_task(len(tasks) + 1, photo("Red Deer"), f"site-{i % 7}", results))
    for i in range(14):  # frogs at the same 7 sites
        results = [_rectangle("r", BOX), _choice("r", "species", "Green Frog"), _choice("r", "sex", "male")]
        tasks.append(_task(len(tasks) + 1, photo("Green Frog"), f"site-{i % 7}", results))
    for _ in range(6):  # frogs labelled for the whole photo, with a person box next to the animal box
        results = [
            _rectangle("a", BOX),
            _rectangle("p", (0.0, 0.0, 15.0, 90.0), "person"),
            _choice("c", "photo_species", "Green Frog"),
        ]
        tasks.append(_task(len(tasks) + 1, photo("Green Frog"), f"site-{len(tasks) % 7}", results))
    for _ in range(12):  # blue jays at one camera only
        results = [_rectangle("r", BOX), _choice("r", "species", "Blue Jay")]
        tasks.append(_task(len(tasks) + 1, photo("Blue Jay"), "jay-feeder", results))
    for _ in range(2):  # a species the config does not list (a renamed or removed choice)
        results = [_rectangle("r", BOX), _choice("r", "species", "Snow Leopard")]
        tasks.append(_task(len(tasks) + 1, photo("Blue Jay"), "site-0", results))
    base = write_folder(tmp_path / "season", tasks, CONFIG, photos)

    done = camtrap(["train", str(base), *FOLDER_FLAGS], folder_env(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout)
    logs = base / "logs"
    labels = json.loads((logs / "label_correspondance.json").read_text())
    assert sorted(labels.values()) == ["Blue Jay", "Green Frog", "Red Deer"], "no sex values, no lower-case twin"
    assert outcome["unmapped_labels"] == {"Snow Leopard": 2}
    assert outcome["grouping"] == "location"
    metrics = json.loads((logs / "metrics.json").read_text())
    assert metrics["crops"]["crops_human"] == 14 + 14 + 6 + 12, "the person boxes are not species crops"
    assert metrics["split"]["split_inside"] == {"Blue Jay": "photo"}
    counts = metrics["split"]["counts"]
    assert counts["train"]["Blue Jay"] >= 1 and counts["test"].get("Blue Jay", 0) + counts["val"].get("Blue Jay", 0)
    card = (Path(outcome["bundle"]) / "card.md").read_text()
    assert "species split inside themselves (fewer than 3 units): Blue Jay photo" in card
    assert "Snow Leopard 2" in card


def test_growing_data_keeps_every_units_split_and_the_gate_scores_only_unseen_photos(tmp_path: Path):
    first = synthetic_project(tmp_path / "photos", per_species=12, sites=12)
    base = project_folder(tmp_path / "season", first)
    env = folder_env(tmp_path)
    done = camtrap(["train", str(base), *FOLDER_FLAGS], env)
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads(done.stdout)

    grown = synthetic_project(tmp_path / "photos-2", per_species=18, sites=15, seed=1)
    for task in grown.tasks:  # new photos (other file names) at the old sites and three new ones
        task["data"]["image"] = task["data"]["image"].replace(".jpg", "-b.jpg")
    for path in sorted(grown.image_dir.iterdir()):
        path.rename(path.with_name(path.name.replace(".jpg", "-b.jpg")))
    offset = len(first.tasks)
    for task in grown.tasks:
        task["id"] += offset
    project_folder(base, grown)
    (base / "label_studio.json").write_text(json.dumps(first.tasks + grown.tasks))
    done = camtrap(["train", str(base), *FOLDER_FLAGS, "--gate-min-test-per-class", "2"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads(done.stdout)

    before = json.loads((Path(one["bundle"]) / "split.json").read_text())
    after = json.loads((Path(two["bundle"]) / "split.json").read_text())
    assert before["grouping"] == after["grouping"] == "location"
    assert {k: after["units"][k] for k in before["units"]} == before["units"]
    seen = {photo for photo, splits in before["photos"].items() if {"train", "val"} & set(splits)}
    tested = {photo for photo, splits in after["photos"].items() if "test" in splits}
    assert not seen & tested, "a test photo of the second run was trained on by the first"
    assert two["served_version"] == one["version"]
    assert two["gate"]["against"] == one["version"]
    assert two["gate"]["excluded_seen_by_served"] == 0
    assert two["status"] in ("promoted", "rejected") and "interval" in two["reason"]
