"""Pipeline + detection store: stored images skip the detector, misses and corrupt entries are recomputed."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import Settings
from backend.contracts.detection_store import DetectionStore, StoredImage, content_key
from backend.vision import pipeline as pipeline_module
from backend.vision.classifier import load_served
from backend.vision.detector import Detector
from backend.vision.pipeline import Pipeline, StoreLookup
from backend.vision.thresholds import Thresholds
from tests.backend.bundles import write_bundle
from tests.backend.conftest import PHOTOS


class Counting:
    """A pipeline observer that counts the detector's images."""

    def __init__(self) -> None:
        self.detected = 0

    def stage_seconds(self, stage: str, seconds: float) -> None:
        pass

    def image_failed(self, stage: str) -> None:
        pass

    def detector_images(self, count: int) -> None:
        self.detected += count

    def classifier_crops(self, count: int) -> None:
        pass


def _run(pipeline: Pipeline, photos: list[bytes]) -> list:
    sources = [lambda data=data: data for data in photos]
    return pipeline.run([f"p{i}" for i in range(len(photos))], sources, None, Thresholds.from_settings(Settings()))


def test_stored_images_skip_the_detector_and_corrupt_entries_are_recomputed(
    tmp_path: Path, detector: Detector, ena24_dir: Path
) -> None:
    photos = [(ena24_dir / name).read_bytes() for name in PHOTOS]
    store = DetectionStore(tmp_path / "detections")
    counting = Counting()
    pipeline = Pipeline(detector, fetch_threads=2, max_pixels=10_000_000, observer=counting, store=store)
    try:
        first = _run(pipeline, photos)
        assert counting.detected == len(photos)
        assert store.count(pipeline.store_detector) == len(photos)
        assert not any(r.cached for r in first)

        second = _run(pipeline, photos)
        assert counting.detected == len(photos)  # nothing went through the detector again
        assert all(r.cached for r in second)
        for a, b in zip(first, second, strict=True):
            assert a.size == b.size
            assert [x.detection.category for x in a.boxes] == [x.detection.category for x in b.boxes]
            assert [x.detection.bbox for x in a.boxes] == [x.detection.bbox for x in b.boxes]

        broken = store.path(content_key(photos[0]), pipeline.store_detector)
        broken.write_text('{"detections": [{"category": "9"', encoding="utf-8")
        third = _run(pipeline, photos)
        assert counting.detected == len(photos) + 1  # only the corrupt entry was recomputed
        assert [r.cached for r in third] == [False, True, True]
        assert [x.detection.bbox for x in third[0].boxes] == [x.detection.bbox for x in first[0].boxes]
        assert store.get(content_key(photos[0]), pipeline.store_detector) is not None  # rewritten

        lookup = StoreLookup(store, pipeline.store_detector)
        assert [d.bbox for d in lookup(photos[1]) or []] == [x.detection.bbox for x in first[1].boxes]
        assert lookup(b"not stored") is None
    finally:
        pipeline.close()


def test_a_lower_threshold_than_stored_runs_the_detector(tmp_path: Path, detector: Detector, ena24_dir: Path) -> None:
    photo = (ena24_dir / PHOTOS[0]).read_bytes()
    counting = Counting()
    pipeline = Pipeline(
        detector, fetch_threads=1, max_pixels=10_000_000, observer=counting, store=DetectionStore(tmp_path)
    )
    strict = Thresholds.from_settings(Settings(detection_threshold=0.5))
    loose = Thresholds.from_settings(Settings(detection_threshold=0.05))
    try:
        pipeline.run(["a"], [lambda: photo], None, strict)
        pipeline.run(["a"], [lambda: photo], None, loose)  # the 0.5 entry lacks the boxes between 0.05 and 0.5
        pipeline.run(["a"], [lambda: photo], None, strict)  # the 0.05 entry answers 0.5
        assert counting.detected == 2
    finally:
        pipeline.close()


def test_training_reads_the_store_of_the_configured_detector(tmp_path: Path, ena24_dir: Path) -> None:
    from backend.contracts.detection_store import StoredImage, detector_key
    from trainer.pipeline import settings_store_lookup

    photo = (ena24_dir / PHOTOS[0]).read_bytes()
    settings = Settings(data_dir=tmp_path, detector_model="/models/md_v5a.0.0.pt", detector_image_size=1280)
    box = {"category": "1", "conf": 0.8, "bbox": [0.1, 0.2, 0.3, 0.4]}
    store = DetectionStore.under(tmp_path)
    store.put(content_key(photo), detector_key("md_v5a_0_0", 1280), StoredImage([box], 0.01))
    found = settings_store_lookup(settings)(photo)
    assert found is not None and [(d.category, d.bbox) for d in found] == [("1", (0.1, 0.2, 0.3, 0.4))]
    other_size = Settings(data_dir=tmp_path, detector_model="/models/md_v5a.0.0.pt", detector_image_size=640)
    assert settings_store_lookup(other_size)(photo) is None  # another inference size never answers


def test_a_stored_image_is_decoded_only_when_a_box_must_be_cropped(
    tmp_path: Path, detector: Detector, ena24_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-task /predict from the store costs the decode of the photo (~20 ms) only when the classifier needs it."""
    decoded: list[int] = []
    real_decode = pipeline_module.decode_image

    def counted_decode(data: bytes, **options: int) -> object:
        decoded.append(1)
        return real_decode(data, **options)

    monkeypatch.setattr(pipeline_module, "decode_image", counted_decode)
    photo = (ena24_dir / PHOTOS[0]).read_bytes()
    store = DetectionStore(tmp_path / "detections")
    counting = Counting()
    pipeline = Pipeline(detector, fetch_threads=1, max_pixels=10_000_000, observer=counting, store=store)
    thresholds = Thresholds.from_settings(Settings())
    write_bundle(tmp_path / "models", "1", "v1", favourite="animal", labels=["animal", "other"], serve=True)
    classifier = load_served(tmp_path / "models", "1")
    key = content_key(photo)
    faint = {"category": "1", "conf": thresholds.classify / 2, "bbox": [0.1, 0.1, 0.3, 0.3]}
    sure = {"category": "1", "conf": 0.9, "bbox": [0.2, 0.2, 0.4, 0.4]}
    try:
        store.put(key, pipeline.store_detector, StoredImage([faint], 0.01, 1920, 1080))
        for with_classifier in (None, classifier):
            (result,) = pipeline.run(["a"], [lambda: photo], with_classifier, thresholds)
            assert result.cached and result.size == (1920, 1080) and result.boxes[0].species is None
        assert decoded == [], "nothing to crop: the stored size and boxes answer without decoding"

        store.put(key, pipeline.store_detector, StoredImage([sure], 0.01, 1920, 1080))
        (result,) = pipeline.run(["a"], [lambda: photo], None, thresholds)
        assert decoded == [] and result.boxes[0].species is None, "no classifier: still no decode"
        (result,) = pipeline.run(["a"], [lambda: photo], classifier, thresholds)
        assert decoded == [1], "an animal box at the classify threshold is cropped from the decoded photo"
        assert result.cached and result.boxes[0].species is not None
        assert counting.detected == 0
    finally:
        pipeline.close()
