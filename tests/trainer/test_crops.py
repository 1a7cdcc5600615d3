"""Building the crop dataset: the shared crop, corrupt images, image-level labels, failed downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.contracts.bundle import Preprocessing
from backend.errors import ImageAccessError
from backend.vision.classifier import SpeciesClassifier
from backend.vision.crop import crop_square, eval_transform
from backend.vision.decode import decode_image
from backend.vision.detector import Detection
from tests.backend.bundles import write_bundle
from trainer.crops import build_crops, download_images
from trainer.export import LabeledBox, LabeledTask
from trainer.presets import BoxJitter

BOX = (0.1, 0.2, 0.5, 0.3)


@pytest.fixture
def photo_bytes(ena24_dir: Path) -> bytes:
    return (ena24_dir / "2480.jpg").read_bytes()


def _build(tasks, files, tmp_path, top_box=None, input_size=1024, **options):
    return build_crops(
        tasks,
        lambda ref, task_id: files[ref],
        out_dir=tmp_path / "crops",
        preprocessing=Preprocessing(input_size=input_size),
        max_pixels=10**9,
        top_box=top_box,
        concurrency=2,
        on_progress=lambda done, total: None,
        **options,
    )


def test_build_crops_cuts_human_boxes_with_the_inference_crop(tmp_path, photo_bytes):
    task = LabeledTask(1, "a.jpg", "site", (LabeledBox(BOX, "Virginia Opossum"),))
    result = _build([task], {"a.jpg": photo_bytes}, tmp_path)
    [crop] = result.crops
    assert (crop.label, crop.location, crop.source) == ("Virginia Opossum", "site", "human")
    expected = crop_square(decode_image(photo_bytes, max_pixels=10**9), BOX)
    with Image.open(crop.path) as saved:
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(expected))


def test_build_crops_downscales_large_crops_to_the_stored_size(tmp_path, photo_bytes):
    task = LabeledTask(1, "a.jpg", None, (LabeledBox(BOX, "Virginia Opossum"),))
    [crop] = _build([task], {"a.jpg": photo_bytes}, tmp_path, input_size=32).crops
    with Image.open(crop.path) as saved:
        assert saved.size == (64, 64), "stored after the crop rule's first step: twice the input size"


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated-jpeg"),
        pytest.param(lambda data: b"<html>not an image</html>", id="not-an-image"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
def test_build_crops_skips_and_counts_a_corrupt_image(tmp_path, photo_bytes, broken):
    tasks = [LabeledTask(i, f"{i}.jpg", None, (LabeledBox(BOX, "Virginia Opossum"),)) for i in (1, 2)]
    files = {"1.jpg": photo_bytes, "2.jpg": broken(photo_bytes)}
    result = _build(tasks, files, tmp_path)
    assert [c.task_id for c in result.crops] == [1]
    assert result.counts["images_corrupt"] == 1 and result.counts["images_ok"] == 1


def test_build_crops_uses_the_top_detector_box_for_an_image_level_label(tmp_path, photo_bytes):
    tasks = [
        LabeledTask(1, "a.jpg", None, image_species="Chicken"),
        LabeledTask(2, "b.jpg", None, image_species="Chicken"),
    ]
    seen = []

    def top_box(image):
        seen.append(image.size)
        return BOX if len(seen) == 1 else None

    result = _build(tasks, {"a.jpg": photo_bytes, "b.jpg": photo_bytes}, tmp_path, top_box=top_box)
    assert [(c.label, c.source) for c in result.crops] == [("Chicken", "detector")]
    assert result.counts["image_level_no_detection"] == 1
    assert len(seen) == 2


def test_the_detection_store_answers_image_level_labels_before_the_detector(tmp_path, photo_bytes):
    other = photo_bytes + b"\0"  # another image (other bytes, other store key), still a valid JPEG
    tasks = [
        LabeledTask(1, "boxed.jpg", None, image_species="Chicken"),
        LabeledTask(2, "empty.jpg", None, image_species="Chicken"),
    ]
    stored = {photo_bytes: [Detection("1", 0.9, BOX)], other: []}

    def top_box(image):
        raise AssertionError("the detector ran although the store had the image")

    result = _build(tasks, {"boxed.jpg": photo_bytes, "empty.jpg": other}, tmp_path, top_box=top_box, lookup=stored.get)
    assert [(c.task_id, c.source) for c in result.crops] == [(1, "detector")]
    assert result.counts["image_level_no_detection"] == 1, "an empty store entry means: no animal, not: ask again"


def test_download_images_returns_only_the_tasks_it_could_fetch():
    tasks = [LabeledTask(i, f"{i}.jpg", None, image_species="x") for i in range(1, 5)]

    def fetch(ref, task_id):
        if task_id % 2:
            raise ImageAccessError(f"{ref} answered 404")
        return b"ok"

    progress = []
    ok = download_images(tasks, fetch, concurrency=3, on_progress=lambda done, total: progress.append((done, total)))
    assert ok == {2, 4}
    assert progress[0] == (0, 4) and progress[-1] == (4, 4)


def test_training_crops_are_pixel_identical_to_serving_at_1000_px(tmp_path, photo_bytes):
    """The stored crop, read back as the gate reads it, gives the network the very tensor serving gives it."""
    bbox = (0.3, 0.03, 0.3, 1000 / 1080)
    bundle = write_bundle(tmp_path / "models", "1", "v1", favourite="Chicken")
    classifier = SpeciesClassifier.load(bundle)
    image = decode_image(photo_bytes, max_pixels=10**9)
    served_crop = classifier.crop(image, bbox)
    assert served_crop.size == (1000, 1000)
    task = LabeledTask(1, "a.jpg", None, (LabeledBox(bbox, "Chicken"),))
    [crop] = _build([task], {"a.jpg": photo_bytes}, tmp_path, input_size=64).crops
    with Image.open(crop.path) as saved:
        stored = saved.convert("RGB")
    assert torch.equal(classifier.transform(stored), classifier.transform(served_crop))
    assert torch.equal(classifier.logits([stored]), classifier.logits([served_crop]))
    one_step = eval_transform(classifier.manifest.preprocessing)(served_crop)
    assert not torch.equal(one_step, classifier.transform(served_crop)), "the chain is two steps, on both sides"


def test_build_crops_adds_jittered_and_detector_views_for_training_and_blank_crops(tmp_path, photo_bytes):
    human, detector_box = (0.2, 0.2, 0.3, 0.3), (0.22, 0.18, 0.32, 0.33)
    deleted = (0.7, 0.6, 0.1, 0.1)
    stored = [Detection("1", 0.9, detector_box), Detection("1", 0.8, deleted), Detection("1", 0.05, (0, 0, 0.1, 0.1))]
    tasks = [
        LabeledTask(1, "a.jpg", "x", (LabeledBox(human, "Chicken"),), rectangles=(human,), from_prediction=True),
        LabeledTask(2, "b.jpg", "x", empty=True),
    ]
    result = _build(
        tasks,
        {"a.jpg": photo_bytes, "b.jpg": photo_bytes},
        tmp_path,
        input_size=32,
        lookup=lambda data: stored,
        jitter=BoxJitter(copies=2),
        min_detection_conf=0.2,
    )
    sources = [(c.task_id, c.source, c.label, c.train_only) for c in result.crops]
    assert sources == [
        (1, "human", "Chicken", False),
        (1, "matched", "Chicken", True),
        (1, "blank", "blank", False),
        (1, "jitter", "Chicken", True),
        (1, "jitter", "Chicken", True),
        (2, "blank", "blank", False),
        (2, "blank", "blank", False),
    ]
