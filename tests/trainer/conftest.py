"""Fixtures of the trainer's tests: tiny training configs, crops on disk, fake Label Studio projects.

Training here is tiny on purpose (the CPU is small and shared): ResNet-18 or MobileNetV3-Small at
32-64 px, a few epochs, no data-loader processes. The GPU paths (CUDA, AMP) cannot run on this machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.config import Settings
from tests.backend.fake_ls import serve_in_thread
from tests.trainer.fake_label_studio import TOKEN, FakeProject, synthetic_project
from trainer.config import TrainConfig
from trainer.crops import Crop


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread while a trainer test runs.

    On a small CPU shared with other processes, torch's OpenMP threads spin-wait for each other and an
    epoch takes ten times longer (seen here: 8 s instead of 0.6 s); one thread is the fast setting.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_config() -> TrainConfig:
    """ResNet-18 at 32 px learns the synthetic colors in a few epochs on the CPU."""
    return TrainConfig.from_settings(
        Settings(),
        backbone="resnet18",
        input_size=32,
        epochs=4,
        batch_size=8,
        learning_rate=1e-3,
        patience=10,
        seed=0,
        num_workers=0,
        val_fraction=0.2,
        test_fraction=0.25,
        min_examples_per_class=2,
        imagenet_weights=False,
    )


@pytest.fixture
def make_crop(tmp_path: Path) -> Callable[..., Crop]:
    """Write a small random PNG and return it as a Crop."""
    counter = iter(range(10**6))

    def make(label: str, task_id: int, location: str | None = None, side: int = 24) -> Crop:
        path = tmp_path / "crops" / f"{task_id}-{next(counter)}.png"
        path.parent.mkdir(exist_ok=True)
        pixels = np.random.default_rng(task_id).integers(0, 255, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        return Crop(path, label, task_id, location, "human")

    return make


@pytest.fixture
def synthetic_ls(tmp_path: Path) -> Iterator[tuple[FakeProject, str]]:
    """Project 2 of generated photos (three colored "species" over four sites), served on loopback."""
    fake = synthetic_project(tmp_path / "photos")
    with serve_in_thread(fake.app()) as url:
        yield fake, url


@pytest.fixture
def ls_settings(tmp_path: Path, synthetic_ls: tuple[FakeProject, str]) -> Settings:
    return Settings(
        label_studio_url=synthetic_ls[1], label_studio_api_key=TOKEN, data_dir=tmp_path / "data", download_concurrency=2
    )
