"""torch's intra-op threads per backend process: ``TORCH_THREADS``, else the cores shared by the workers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from backend.vision.device import set_cpu_threads


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_an_explicit_count_wins() -> None:
    assert set_cpu_threads(3, processes=4) == 3
    assert torch.get_num_threads() == 3


def test_zero_shares_the_cores_between_the_workers_and_keeps_at_least_one() -> None:
    cores = len(os.sched_getaffinity(0))
    assert set_cpu_threads(0, processes=2) == max(1, cores // 2) == torch.get_num_threads()
    assert set_cpu_threads(0, processes=cores * 4) == 1 == torch.get_num_threads()
    assert set_cpu_threads(0, processes=1) == cores == torch.get_num_threads()
