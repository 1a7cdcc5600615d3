"""``camtrap train`` as a user runs it: a subprocess configured by environment variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from backend.contracts import registry
from tests.trainer.fake_label_studio import TOKEN

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
