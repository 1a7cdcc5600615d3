"""The detection store: atomic entries per image content and detector, corrupt ones ignored."""

from __future__ import annotations

import multiprocessing

from backend.contracts.detection_store import DetectionStore, StoredImage, content_key, detector_key

BOXES = [
    {"category": "1", "conf": 0.3, "bbox": [0.1, 0.1, 0.2, 0.2]},
    {"category": "1", "conf": 0.9, "bbox": [0.5, 0.5, 0.1, 0.1]},
]
DET = detector_key("mdlite+yolox_tiny", 640)


def test_round_trip_sorted_and_filtered_by_threshold(tmp_path):
    store = DetectionStore.under(tmp_path)
    key = content_key(b"photo")
    assert store.get(key, DET) is None
    store.put(key, DET, StoredImage(BOXES, threshold=0.1, width=640, height=480))
    entry = store.get(key, DET)
    assert entry is not None and [d["conf"] for d in entry.detections] == [0.9, 0.3]
    assert (entry.width, entry.height) == (640, 480)
    high = store.get(key, DET, threshold=0.5)
    assert high is not None and [d["conf"] for d in high.detections] == [0.9]
    assert store.get(key, DET, threshold=0.05) is None, "entry kept at 0.1 cannot answer for 0.05"
    assert store.get(key, detector_key("mdlite+yolox_tiny", 1280)) is None, "another inference size is a miss"
    assert store.count(DET) == 1


def test_corrupt_or_wrong_shape_entries_are_misses_not_served(tmp_path):
    store = DetectionStore.under(tmp_path)
    key = content_key(b"photo")
    path = store.path(key, DET)
    path.parent.mkdir(parents=True)
    for bad in ('{"detections": [{"category": "1", "conf": 0.5, "bbox": [0, 0]}], "threshold": 0.1}', "{trunc", "[]"):
        path.write_text(bad)
        assert store.get(key, DET) is None
    store.put(key, DET, StoredImage(BOXES, threshold=0.1))
    assert store.get(key, DET) is not None, "a recomputed entry replaces the corrupt one"


def _writer(root: str, n: int) -> None:
    store = DetectionStore(root)  # type: ignore[arg-type]
    for i in range(n):
        store.put(content_key(b"same"), DET, StoredImage(BOXES[: 1 + i % 2], threshold=0.1))


def test_concurrent_writers_never_leave_a_half_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 200)) for _ in range(2)]
    for p in procs:
        p.start()
    store = DetectionStore(tmp_path)
    seen = 0
    while any(p.is_alive() for p in procs):
        if store.path(content_key(b"same"), DET).exists():
            assert store.get(content_key(b"same"), DET) is not None
            seen += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert not list(tmp_path.rglob(".tmp-*")), "no temporary file left behind"
