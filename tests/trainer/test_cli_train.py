"""``camtrap train`` as a user runs it: a subprocess configured by environment variables."""

from __future__ import annotations

import json
import os
from pathlib import Path

from backend.contracts import registry
from tests.trainer.fake_label_studio import TOKEN, synthetic_project
from tests.trainer.folders import FOLDER_FLAGS, TINY_FLAGS, camtrap, project_folder


def test_camtrap_train_trains_promotes_and_prints_the_outcome(synthetic_ls, tmp_path: Path) -> None:
    _, url = synthetic_ls
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": url,
        "LABEL_STUDIO_API_KEY": TOKEN,
        "DATA_DIR": str(tmp_path / "d"),
        "OMP_NUM_THREADS": "1",
    }
    done = camtrap(["train", "--project", "2", *TINY_FLAGS], env)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout)
    assert outcome["status"] == "promoted"
    assert registry.read_current(tmp_path / "d" / "models", "2") == outcome["version"]


def test_camtrap_train_fails_with_one_sentence_when_label_studio_is_down(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": "http://127.0.0.1:9",
        "LABEL_STUDIO_API_KEY": TOKEN,
        "DATA_DIR": str(tmp_path / "d"),
    }
    done = camtrap(["train", "--project", "2", *TINY_FLAGS], env)
    assert done.returncode == 1
    assert "could not export project 2" in done.stderr
    assert "Traceback" not in done.stderr
    assert registry.read_current(tmp_path / "d" / "models", "2") is None


def test_camtrap_train_base_trains_from_a_label_studio_json_export(tmp_path: Path) -> None:
    fake = synthetic_project(tmp_path / "photos")
    base = project_folder(tmp_path / "season", fake)
    env = {**os.environ, "DATA_DIR": str(tmp_path / "d"), "OMP_NUM_THREADS": "1"}
    env.pop("LABEL_STUDIO_URL", None)
    done = camtrap(["train", str(base), *FOLDER_FLAGS], env)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout)
    assert outcome["status"] == "promoted"
    logs = base / "logs"
    correspondence = json.loads((logs / "label_correspondance.json").read_text())
    assert sorted(correspondence.values()) == sorted(fake.species)
    assert list(correspondence) == [str(i) for i in range(len(fake.species))]
    assert json.loads((logs / "metrics.json").read_text())["test"]["count"] > 0
    assert (logs / "confusion_matrix.png").stat().st_size > 0
    assert list(logs.glob("events.out.tfevents.*"))
    assert registry.read_current(logs / "models", "folder") == outcome["version"]


def test_camtrap_train_base_names_the_file_and_line_of_a_broken_export(tmp_path: Path) -> None:
    base = project_folder(tmp_path / "season", synthetic_project(tmp_path / "photos"))
    (base / "label_studio.json").write_text('[\n{"id": 1,\n "data": {oops}}\n]')
    done = camtrap(["train", str(base), *FOLDER_FLAGS], {**os.environ, "DATA_DIR": str(tmp_path / "d")})
    assert done.returncode == 1
    assert f"{base / 'label_studio.json'}, line 3: not valid JSON" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (base / "logs" / "label_correspondance.json").exists()


def test_camtrap_train_base_says_which_layouts_it_reads(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = camtrap(["train", str(tmp_path / "empty")], {**os.environ, "DATA_DIR": str(tmp_path / "d")})
    assert done.returncode == 1
    assert "holds none of the training layouts: expected label_studio.json" in done.stderr


def test_camtrap_train_wants_a_folder_or_a_project(tmp_path: Path) -> None:
    done = camtrap(["train"], {**os.environ, "DATA_DIR": str(tmp_path / "d")})
    assert done.returncode == 2
    assert "give a training folder BASE or --project N" in done.stderr
