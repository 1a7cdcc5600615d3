"""Which torch device a model runs on: the one rule for the detector, the classifier and training."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str | None) -> torch.device:
    """``name`` (``cuda``, ``cuda:1``, ``cpu``) if given, else CUDA when available, else the CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_cpu_threads(requested: int, processes: int) -> int:
    """Give torch ``requested`` intra-op threads in this process, or (0) this machine's cores shared by ``processes``.

    torch starts one thread per core in every process; with several uvicorn workers (or other load) on the
    same cores its threads wait on each other, and small batches (a one-task ``/predict`` from the detection
    store: a crop or two) pay most. Returns the count set.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = requested or max(1, cores // max(1, processes))
    torch.set_num_threads(threads)
    return threads
