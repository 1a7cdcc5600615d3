"""Loading an MDv5 checkpoint must not change the thread count of the processes started after it.

yolov5's import sets ``OMP_NUM_THREADS`` in ``os.environ``; a child process (a benchmark's server, a
respawned worker) then runs torch on fewer cores. The load runs in a fresh interpreter so that yolov5
is imported there for the first time, as in a service process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, os, sys
from backend.config import Settings
from backend.vision.detector import Detector
before = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "NUMEXPR_MAX_THREADS")}
Detector.load(Settings(detector_model=sys.argv[1]))
import yolov5.utils.general  # already imported by the loader: the variables it set are gone again
after = {k: os.environ.get(k) for k in before}
print(json.dumps([before, after]))
"""


@pytest.mark.parametrize("preset", [None, "2"])
def test_loading_megadetector_keeps_omp_num_threads(tiny_detector_path: Path, preset: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMEXPR_MAX_THREADS")}
    if preset is not None:
        env["OMP_NUM_THREADS"] = preset
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", PROBE, str(tiny_detector_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert after == before == {"OMP_NUM_THREADS": preset, "NUMEXPR_MAX_THREADS": None}
