"""``camtrap crops`` against megadetector's own crop_detections: same names, same pixels, same bytes."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.md_crops import crop_detections, read_md_results

DETECTOR = "md_v5a.0.0.pt"
#: Boxes that exercise megadetector's square rule: inside, wider than tall, at each border, clipped, empty.
BOXES = [
    [0.40, 0.30, 0.20, 0.10],
    [0.00, 0.00, 0.05, 0.40],
    [0.90, 0.85, 0.10, 0.15],
    [0.10, 0.20, 0.85, 0.70],
    [0.30, 0.30, 0.0, 0.2],
    [0.31, 0.47, 0.123, 0.071],
]


@pytest.fixture(scope="module")
def md_crop_detections() -> types.ModuleType:
    """megadetector.classification.crop_detections, importable without the Azure SDK.

    It imports ``azure.storage.blob.ContainerClient`` at the top for downloads from Azure, which cannot
    happen here (no internet, local images only); a stand-in module satisfies the import and is never used.
    """
    if "azure.storage.blob" not in sys.modules:
        for name in ("azure", "azure.storage", "azure.storage.blob"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["azure.storage.blob"].ContainerClient = object  # type: ignore[attr-defined]
    return importlib.import_module("megadetector.classification.crop_detections")


def _results(files: list[str], *, with_failure: str | None = None) -> dict:
    images = []
    for i, file in enumerate(files):
        detections = [
            {"category": "1", "conf": round(0.9 - 0.1 * j, 3), "bbox": box} for j, box in enumerate(BOXES[: 2 + i % 5])
        ]
        detections.append({"category": "2", "conf": 0.95, "bbox": [0.1, 0.1, 0.2, 0.2]})  # a person: not cropped
        images.append({"file": file, "detections": detections})
    if with_failure:
        images.append({"file": with_failure, "failure": "image access failure", "detections": None})
    return {
        "info": {"format_version": "1.4", "detector": DETECTOR},
        "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
        "images": images,
    }


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_same_crops_as_megadetector_byte_for_byte(
    ena24_dir: Path, tmp_path: Path, md_crop_detections: types.ModuleType
) -> None:
    images = tmp_path / "photos"
    (images / "cam 1").mkdir(parents=True)
    names = sorted(p.name for p in ena24_dir.glob("*.jpg"))[:6]
    files = []
    for i, name in enumerate(names):
        relative = f"cam 1/{name}" if i % 2 else name
        (images / relative).write_bytes((ena24_dir / name).read_bytes())
        files.append(relative)
    results_path = tmp_path / "detections.json"
    results_path.write_text(json.dumps(_results(files)))

    theirs = tmp_path / "md_crops"
    md_crop_detections.main(
        str(results_path), str(theirs), str(images), None, None, False, True, False, 0.55, 1, str(tmp_path / "log")
    )
    ours = tmp_path / "our_crops"
    report = crop_detections(read_md_results(results_path), ours, images, threshold=0.55, max_pixels=10**9, threads=2)

    expected = _files(theirs)
    assert expected, "megadetector made crops"
    assert set(_files(ours)) == set(expected), "same names (index kept across skipped boxes, sub-folders mirrored)"
    for name, data in expected.items():
        assert _files(ours)[name] == data, f"{name}: same JPEG bytes as megadetector's"
    assert report.crops_written == len(expected)
    assert any("___crop01_" in n for n in expected) and not any("___crop05_" in n for n in expected)

    again = crop_detections(read_md_results(results_path), ours, images, threshold=0.55, max_pixels=10**9)
    assert (again.crops_written, again.crops_existing) == (0, len(expected)), "a second run resumes"


def test_zero_padding_matches_megadetector_where_the_square_leaves_the_image(
    tmp_path: Path, md_crop_detections: types.ModuleType
) -> None:
    from backend.vision.crop import crop_square

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (37, 101, 3), dtype=np.uint8))
    # the last box: a 44 px square over a 37 px tall image, 7 rows of padding: round(3.5) puts 4 above, not 3
    for box in ([0.0, 0.0, 1.0, 1.0], [0.2, 0.1, 0.7, 0.9], [0.05, 0.0, 0.3, 1.0], [0.1, 0.0, 0.4357, 1.0]):
        md_crop_detections.save_crop(image, box, True, str(tmp_path / "md.png"))
        ours = crop_square(image, box)
        assert ours is not None
        assert np.array_equal(np.asarray(ours), np.asarray(Image.open(tmp_path / "md.png"))), box


def _camtrap(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("camtrap")), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd, env=os.environ)


def test_camtrap_crops_reports_unreadable_images_and_goes_on(ena24_dir: Path, tmp_path: Path) -> None:
    name = sorted(p.name for p in ena24_dir.glob("*.jpg"))[0]
    (tmp_path / name).write_bytes((ena24_dir / name).read_bytes())
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "detections.json").write_text(json.dumps(_results([name, "broken.jpg"], with_failure="gone.jpg")))
    done = _camtrap(["crops", "detections.json", "-o", "crops", "--threshold", "0.5"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["crops_written"] == 2
    assert [f["file"] for f in summary["images_failed"]] == ["broken.jpg"]
    assert summary["images_without_detections"] == ["gone.jpg"]
    assert sorted(p.name for p in (tmp_path / "crops").iterdir()) == [
        f"{name}___crop00_{DETECTOR}.jpg",
        f"{name}___crop01_{DETECTOR}.jpg",
    ]
    assert "broken.jpg" in done.stderr


def test_camtrap_crops_refuses_a_file_that_is_not_megadetector_output(tmp_path: Path) -> None:
    (tmp_path / "detections.json").write_text(json.dumps({"images": [{"file": "a.jpg", "detections": []}]}))
    done = _camtrap(["crops", "detections.json", "-o", "crops"], tmp_path)
    assert done.returncode == 1
    assert "detections.json is not a MegaDetector results file: Input does not contain info field" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "crops").exists()
    (tmp_path / "detections.json").write_text('{"info": {\n"format_version": 1.4,,}}')
    done = _camtrap(["crops", "detections.json", "-o", "crops"], tmp_path)
    assert done.returncode == 1 and "detections.json, line 2: not valid JSON" in done.stderr
