"""``camtrap train`` as a user runs it (a subprocess), and training folders written the way it reads them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.trainer.fake_label_studio import FakeProject, label_config

#: Small enough for this CPU, large enough that ResNet-18 learns the synthetic colours.
TINY_FLAGS = [
    "--backbone",
    "resnet18",
    "--input-size",
    "32",
    "--epochs",
    "4",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--min-examples",
    "2",
    "--no-redis",
]
#: The same for ``camtrap train BASE`` (no Redis flag: a folder never uses it).
FOLDER_FLAGS = TINY_FLAGS[:-1]


def camtrap(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("camtrap")), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def folder_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "DATA_DIR": str(tmp_path / "d"), "OMP_NUM_THREADS": "1"}
    env.pop("LABEL_STUDIO_URL", None)
    return env


def write_folder(base: Path, tasks: list[dict], config: str, image_dir: Path) -> Path:
    """``base`` laid out as ``camtrap train BASE`` reads a Label Studio JSON export (images copied)."""
    (base / "images").mkdir(parents=True, exist_ok=True)
    for path in image_dir.iterdir():
        shutil.copy(path, base / "images" / path.name)
    (base / "label_studio.json").write_text(json.dumps(tasks))
    (base / "label_config.xml").write_text(config)
    return base


def project_folder(base: Path, fake: FakeProject) -> Path:
    return write_folder(base, fake.tasks, label_config(fake.species), fake.image_dir)
