"""Helpers of the from-files tests: MegaDetector results made by our pipeline, and camtrap run as a user runs it.

The results file is made by ``camtrap detect`` with the offline MegadetectorLite detector
(``DETECTOR_MODEL=mdlite``: real camera-trap boxes, no download), as a user without internet makes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Tiny training: the machine is small and shared.
TINY_TRAIN = [
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
]
#: ``camtrap detect`` with the offline detector, one torch thread.
MDLITE_ENV = {"DETECTOR_MODEL": "mdlite", "DETECTOR_DEVICE": "cpu", "DETECTOR_BATCH_SIZE": "4"}


def run(
    command: Sequence[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command as a user would, with the venv's ``camtrap`` first on PATH and one torch thread."""
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "DATA_DIR": str(cwd / "data"),
    }
    environment.pop("LABEL_STUDIO_URL", None)
    environment.update(env or {})
    return subprocess.run(list(command), cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


def camtrap(
    args: Sequence[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return run([str(Path(sys.executable).with_name("camtrap")), *args], cwd, timeout, env)
