"""Keep the thread-count variables a third-party import rewrites out of our environment.

Importing ``yolov5.utils.general`` (which ``megadetector``'s loader does for every MDv5 checkpoint) sets
``os.environ["OMP_NUM_THREADS"]`` to ``min(8, cpu_count - 1)``: 1 on a 2-core machine. The loading
process keeps the thread pool torch already has, but every process started after it (a benchmark's
``camtrap serve``, a uvicorn worker respawned by a supervisor that loaded a model, a ``camtrap detect``
run from a script) inherits the variable and runs torch on fewer cores than the machine has: measured
here, ``/predict`` ran at 0.62x the raw ``megadetector`` throughput for this reason alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

#: The variables yolov5 sets at import time.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "NUMEXPR_MAX_THREADS")


@contextmanager
def thread_env_kept() -> Iterator[None]:
    """Run the block, then put :data:`THREAD_VARIABLES` back as they were (set, or absent)."""
    before = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
