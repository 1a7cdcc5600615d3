"""POST /v1/detect: multipart uploads and URL lists in, MegaDetector batch output out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from backend.config import Settings
from backend.vision.detector import Detector
from tests.backend.conftest import PHOTOS, running_app


def test_detect_multipart_returns_md_format_with_failure_per_image(
    settings_factory: Callable[..., Settings], detector: Detector, ena24_dir: Path
) -> None:
    files = [
        ("images", (PHOTOS[0], (ena24_dir / PHOTOS[0]).read_bytes(), "image/jpeg")),
        ("images", ("notes.txt", b"not an image", "text/plain")),
        ("other", (PHOTOS[1], (ena24_dir / PHOTOS[1]).read_bytes(), "image/jpeg")),
    ]
    with running_app(settings_factory(), detector) as url:
        response = httpx.post(f"{url}/v1/detect", files=files, timeout=120)
    assert response.status_code == 200
    output = response.json()
    assert set(output) == {"info", "detection_categories", "classification_categories", "images"}
    assert output["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    assert output["classification_categories"] == {}
    assert [image["file"] for image in output["images"]] == [PHOTOS[0], "notes.txt", PHOTOS[1]]
    first, failed, third = output["images"]
    assert failed["detections"] is None and failed["failure"] == "image access failure"
    assert "not an image" in failed["failure_detail"]
    for image in (first, third):
        assert image["failure"] is None and image["detections"]
        for detection in image["detections"]:
            assert detection["category"] in {"1", "2", "3"}
            assert 0.01 <= detection["conf"] <= 1
            assert len(detection["bbox"]) == 4 and all(0 <= v <= 1 for v in detection["bbox"])


def test_detect_urls_fetches_through_label_studio_and_refuses_others(
    settings_factory: Callable[..., Settings], detector: Detector
) -> None:
    urls = ["/data/upload/1/2480.jpg", "http://192.168.1.10/cam.jpg", "/data/upload/1/truncated.jpg"]
    with running_app(settings_factory(), detector) as url:
        response = httpx.post(f"{url}/v1/detect", json={"urls": urls}, timeout=120)
    assert response.status_code == 200
    images = response.json()["images"]
    assert [i["file"] for i in images] == urls
    assert images[0]["detections"]
    assert "ALLOWED_IMAGE_HOSTS" in images[1]["failure_detail"]
    assert "truncated" in images[2]["failure_detail"]


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        pytest.param(
            {"content": b"{bad", "headers": {"content-type": "application/json"}},
            422,
            "malformed JSON",
            id="malformed-json",
        ),
        pytest.param(
            {"content": b'{"urls": ["\xff"]}', "headers": {"content-type": "application/json"}},
            422,
            "malformed JSON",
            id="not-utf8",
        ),
        pytest.param({"json": {"urls": []}}, 422, "at least one URL", id="no-urls"),
        pytest.param({"content": b"x", "headers": {"content-type": "text/plain"}}, 415, "multipart", id="wrong-type"),
        pytest.param({"files": [("field", (None, b"value"))]}, 422, "no image file", id="form-without-file"),
    ],
)
def test_detect_refuses_bad_request_with_message(
    settings_factory: Callable[..., Settings], detector: Detector, kwargs: dict, status: int, message: str
) -> None:
    with running_app(settings_factory(), detector) as url:
        response = httpx.post(f"{url}/v1/detect", **kwargs)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_openapi_documents_detect_route(settings_factory: Callable[..., Settings], detector: Detector) -> None:
    with running_app(settings_factory(), detector) as url:
        schema = httpx.get(f"{url}/openapi.json").json()
        docs = httpx.get(f"{url}/docs")
    body = schema["paths"]["/v1/detect"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert docs.status_code == 200


def test_detect_with_mdlite_gives_valid_megadetector_json_with_animal_boxes(
    settings_factory: Callable[..., Settings], mdlite_detector: Detector, ena24_dir: Path, tmp_path: Path
) -> None:
    from megadetector.postprocessing.validate_batch_results import validate_batch_results

    files = [("images", (name, (ena24_dir / name).read_bytes(), "image/jpeg")) for name in PHOTOS]
    with running_app(settings_factory(detector_model="mdlite"), mdlite_detector) as url:
        response = httpx.post(f"{url}/v1/detect", files=files, timeout=120)
    assert response.status_code == 200
    output = response.json()
    assert output["info"]["detector"] == "mdlite" and output["info"]["model_version"] == "mdlite+none"
    path = tmp_path / "mdlite.json"
    path.write_text(response.text)
    assert validate_batch_results(str(path))["validation_results"]["errors"] == []
    for image in output["images"]:
        assert image["failure"] is None and image["detections"], image["file"]
        assert {d["category"] for d in image["detections"]} == {"1"}  # MegadetectorLite knows animals only
    shown = [image["file"] for image in output["images"] if image["detections"][0]["conf"] >= 0.2]
    assert shown == PHOTOS[:2]  # 596.jpg's squirrel scores 0.17: kept (>= 0.01) but under the show threshold
