"""``camtrap train`` as a user runs it: a subprocess configured by environment variables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from backend.contracts import registry
from tests.trainer.fake_label_studio import TOKEN, FakeProject, label_config, synthetic_project

TINY_FLAGS = [
    "--backbone",
    "mobilenet_v3_small",
    "--input-size",
    "32",
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--min-examples",
    "2",
    "--no-redis",
]


def _camtrap(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("camtrap")), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_camtrap_train_trains_promotes_and_prints_the_outcome(synthetic_ls, tmp_path: Path) -> None:
    _, url = synthetic_ls
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": url,
        "LABEL_STUDIO_API_KEY": TOKEN,
        "DATA_DIR": str(tmp_path / "d"),
        "OMP_NUM_THREADS": "1",
    }
    done = _camtrap(["train", "--project", "2", *TINY_FLAGS], env)
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
    done = _camtrap(["train", "--project", "2", *TINY_FLAGS], env)
    assert done.returncode == 1
    assert "could not export project 2" in done.stderr
    assert "Traceback" not in done.stderr
    assert registry.read_current(tmp_path / "d" / "models", "2") is None


def _label_studio_folder(base: Path, fake: FakeProject) -> Path:
    """``base`` laid out as ``camtrap train BASE`` reads a Label Studio JSON export."""
    (base / "images").mkdir(parents=True)
    for path in fake.image_dir.iterdir():
        shutil.copy(path, base / "images" / path.name)
    (base / "label_studio.json").write_text(json.dumps(fake.tasks))
    (base / "label_config.xml").write_text(label_config(fake.species))
    return base


def test_camtrap_train_base_trains_from_a_label_studio_json_export(tmp_path: Path) -> None:
    fake = synthetic_project(tmp_path / "photos")
    base = _label_studio_folder(tmp_path / "season", fake)
    env = {**os.environ, "DATA_DIR": str(tmp_path / "d"), "OMP_NUM_THREADS": "1"}
    env.pop("LABEL_STUDIO_URL", None)
    done = _camtrap(["train", str(base), *TINY_FLAGS[:-1]], env)
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
    base = _label_studio_folder(tmp_path / "season", synthetic_project(tmp_path / "photos"))
    (base / "label_studio.json").write_text('[\n{"id": 1,\n "data": {oops}}\n]')
    done = _camtrap(["train", str(base), *TINY_FLAGS[:-1]], {**os.environ, "DATA_DIR": str(tmp_path / "d")})
    assert done.returncode == 1
    assert f"{base / 'label_studio.json'}, line 3: not valid JSON" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (base / "logs" / "label_correspondance.json").exists()


def test_camtrap_train_base_says_which_layouts_it_reads(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = _camtrap(["train", str(tmp_path / "empty")], {**os.environ, "DATA_DIR": str(tmp_path / "d")})
    assert done.returncode == 1
    assert "holds none of the training layouts: expected label_studio.json" in done.stderr


def test_camtrap_train_wants_a_folder_or_a_project(tmp_path: Path) -> None:
    done = _camtrap(["train"], {**os.environ, "DATA_DIR": str(tmp_path / "d")})
    assert done.returncode == 2
    assert "give a training folder BASE or --project N" in done.stderr
