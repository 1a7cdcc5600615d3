"""Which file a Label Studio image reference names (upload prefix, local files, cloud keys, URLs)."""

from __future__ import annotations

import pytest

from backend.labelstudio.references import reference_name, reference_path, upload_safe_name


@pytest.mark.parametrize(
    ("reference", "path", "name"),
    [
        pytest.param("/data/upload/3/1a2b3c4d-IMG_0001.JPG", "IMG_0001.JPG", "IMG_0001.JPG", id="upload-prefix"),
        pytest.param("upload/3/deadbeef-a.jpg", "a.jpg", "a.jpg", id="upload-relative"),
        pytest.param("/data/local-files/?d=crops/cam%201/b.JPG", "crops/cam 1/b.JPG", "b.JPG", id="local-files"),
        pytest.param("http://ls:8080/data/local-files/?d=x/c.jpg", "x/c.jpg", "c.jpg", id="local-files-with-host"),
        pytest.param("s3://bucket/site/d.jpg", "bucket/site/d.jpg", "d.jpg", id="s3"),
        pytest.param("https://img.example/p/e%20f.jpg?sig=abc", "p/e f.jpg", "e f.jpg", id="url-with-query"),
        pytest.param("cam2/g.jpg", "cam2/g.jpg", "g.jpg", id="plain-relative"),
    ],
)
def test_reference_path_and_name(reference: str, path: str, name: str) -> None:
    assert reference_path(reference) == path
    assert reference_name(reference) == name


def test_a_name_that_only_looks_like_an_upload_prefix_is_kept_outside_uploads() -> None:
    assert reference_name("/data/local-files/?d=cafebabe-h.jpg") == "cafebabe-h.jpg"


def test_upload_safe_name_is_what_label_studio_stores() -> None:
    assert upload_safe_name("IMG (1) a.jpg") == "IMG_1_a.jpg"
    assert upload_safe_name("plain-name_2.JPG") == "plain-name_2.JPG"
