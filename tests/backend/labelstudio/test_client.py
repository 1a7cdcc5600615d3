"""LabelStudioClient: reference resolution, URL policy, auth (legacy and PAT), limits, cache."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import pytest

from backend.config import Settings
from backend.errors import ImageAccessError, LabelStudioError
from backend.labelstudio.client import LabelStudioClient
from tests.backend.fake_ls import LEGACY_TOKEN, FakeLabelStudio, make_jwt, make_pat, serve_in_thread

LS = "http://ls.test:8080"
PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 100


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values = {"data_dir": tmp_path, "label_studio_url": LS, "label_studio_api_key": LEGACY_TOKEN}
    values.update(overrides)
    return Settings(**values)


class Recorder:
    """A MockTransport handler that answers images and token refreshes and records every request."""

    def __init__(self, pat: str | None = None, access_lifetime_s: float = 300) -> None:
        self.requests: list[httpx.Request] = []
        self.pat = pat
        self.access_lifetime_s = access_lifetime_s
        self.refreshes = 0
        self.reject_next_bearer = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/api/token/refresh/":
            self.refreshes += 1
            access = make_jwt({"token_type": "access", "exp": int(time.time() + self.access_lifetime_s)})
            return httpx.Response(200, json={"access": access})
        if self.reject_next_bearer and request.headers.get("authorization", "").startswith("Bearer"):
            self.reject_next_bearer = False
            return httpx.Response(401, json={"detail": "token expired"})
        if request.url.path.endswith("/presign/"):
            return httpx.Response(303, headers={"location": "https://bucket.example.com/img.jpg?X-Amz-Signature=s"})
        if request.url.path == "/missing.jpg":
            return httpx.Response(404)
        if request.url.path == "/api/projects/3":
            return httpx.Response(200, json={"id": 3})
        return httpx.Response(200, content=PNG)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def client_for(settings: Settings, handler: Recorder, **kwargs: object) -> LabelStudioClient:
    return LabelStudioClient(settings, transport=httpx.MockTransport(handler), **kwargs)


@pytest.mark.parametrize(
    ("ref", "expected_url"),
    [
        pytest.param("/data/upload/1/a.jpg", f"{LS}/data/upload/1/a.jpg", id="upload"),
        pytest.param("upload/1/a.jpg", f"{LS}/data/upload/1/a.jpg", id="upload-no-prefix"),
        pytest.param("/upload/1/a.jpg", f"{LS}/data/upload/1/a.jpg", id="upload-slash"),
        pytest.param(
            "/storage-data/uploaded/?filepath=upload/1/a.jpg",
            f"{LS}/storage-data/uploaded/?filepath=upload/1/a.jpg",
            id="storage-data",
        ),
        pytest.param("/data/local-files/?d=photos/a.jpg", f"{LS}/data/local-files/?d=photos/a.jpg", id="local-files"),
        pytest.param(f"{LS}/data/upload/1/a.jpg", f"{LS}/data/upload/1/a.jpg", id="absolute-ls-url"),
    ],
)
def test_fetch_image_resolves_ls_references_with_token(tmp_path: Path, ref: str, expected_url: str) -> None:
    handler = Recorder()
    with client_for(make_settings(tmp_path), handler) as client:
        assert client.fetch_image(ref) == PNG
    assert str(handler.last.url) == expected_url
    assert handler.last.headers["authorization"] == f"Token {LEGACY_TOKEN}"


def test_fetch_image_presigns_cloud_uri_and_drops_auth_on_redirect(tmp_path: Path) -> None:
    handler = Recorder()
    with client_for(make_settings(tmp_path), handler) as client:
        assert client.fetch_image("s3://bucket/dir/img.jpg", task_id=42) == PNG
    presign, download = handler.requests
    fileuri = base64.urlsafe_b64encode(b"s3://bucket/dir/img.jpg").decode()
    assert presign.url.path == "/tasks/42/presign/"
    assert presign.url.params["fileuri"] == fileuri
    assert presign.headers["authorization"] == f"Token {LEGACY_TOKEN}"
    assert download.url.host == "bucket.example.com"
    assert "authorization" not in download.headers


def test_fetch_image_refuses_cloud_uri_without_task_id(tmp_path: Path) -> None:
    with client_for(make_settings(tmp_path), Recorder()) as client, pytest.raises(ImageAccessError, match="task id"):
        client.fetch_image("gs://bucket/img.jpg")


def test_fetch_image_exchanges_pat_and_sends_bearer(tmp_path: Path) -> None:
    pat = make_pat()
    handler = Recorder(pat=pat)
    with client_for(make_settings(tmp_path, label_studio_api_key=pat), handler, use_cache=False) as client:
        client.fetch_image("/data/upload/1/a.jpg")
        client.fetch_image("/data/upload/1/b.jpg")
    assert handler.refreshes == 1
    refresh = handler.requests[0]
    assert refresh.url.path == "/api/token/refresh/" and pat in refresh.content.decode()
    assert handler.last.headers["authorization"].startswith("Bearer ")
    assert handler.last.headers["authorization"] != f"Bearer {pat}"


def test_fetch_image_refreshes_access_token_before_expiry(tmp_path: Path) -> None:
    pat = make_pat()
    handler = Recorder(pat=pat, access_lifetime_s=10)  # inside the refresh margin: refreshed every time
    with client_for(make_settings(tmp_path, label_studio_api_key=pat), handler, use_cache=False) as client:
        client.fetch_image("/data/upload/1/a.jpg")
        client.fetch_image("/data/upload/1/b.jpg")
    assert handler.refreshes == 2


def test_fetch_image_retries_once_after_bearer_rejected(tmp_path: Path) -> None:
    pat = make_pat()
    handler = Recorder(pat=pat)
    handler.reject_next_bearer = True
    with client_for(make_settings(tmp_path, label_studio_api_key=pat), handler) as client:
        assert client.fetch_image("/data/upload/1/a.jpg") == PNG
    assert handler.refreshes == 2


def test_fetch_image_reports_expired_pat(tmp_path: Path) -> None:
    pat = make_pat(lifetime_s=-60)
    with client_for(make_settings(tmp_path, label_studio_api_key=pat), Recorder(pat=pat)) as client:
        with pytest.raises(ImageAccessError, match="expired"):
            client.fetch_image("/data/upload/1/a.jpg")


def test_fetch_image_falls_back_to_setup_token_without_api_key(tmp_path: Path) -> None:
    handler = Recorder()
    settings = make_settings(tmp_path, label_studio_api_key=None)
    with client_for(settings, handler, fallback_token="setup-token") as client:
        client.fetch_image("/data/upload/1/a.jpg")
    assert handler.last.headers["authorization"] == "Token setup-token"


@pytest.mark.parametrize(
    ("ref", "overrides", "message"),
    [
        pytest.param("http://10.0.0.5/a.jpg", {}, "ALLOWED_IMAGE_HOSTS", id="private-not-allowed"),
        pytest.param("http://93.184.216.34/a.jpg", {}, "ALLOWED_IMAGE_HOSTS", id="public-not-allowed"),
        pytest.param("http://10.0.0.5/a.jpg", {"allowed_image_hosts": "10.0.0.5"}, "private", id="allowed-but-private"),
        pytest.param("http://127.0.0.1:9/a.jpg", {"allowed_image_hosts": "127.0.0.1"}, "private", id="loopback"),
        pytest.param("http://localhost/a.jpg", {"allowed_image_hosts": "localhost"}, "private", id="localhost-name"),
        pytest.param("http://[::1]/a.jpg", {"allowed_image_hosts": "::1"}, "private", id="ipv6-loopback"),
        pytest.param("file:///etc/passwd", {}, "file://", id="file-url"),
        pytest.param("ftp://example.com/a.jpg", {}, "unsupported", id="ftp"),
        pytest.param("just-a-name.jpg", {}, "unsupported", id="bare-name"),
        pytest.param("", {}, "no image reference", id="empty"),
    ],
)
def test_fetch_image_refuses_reference_outside_policy(tmp_path: Path, ref: str, overrides: dict, message: str) -> None:
    handler = Recorder()
    with client_for(make_settings(tmp_path, **overrides), handler) as client:
        with pytest.raises(ImageAccessError, match=message):
            client.fetch_image(ref)
    assert handler.requests == []


def test_fetch_image_allows_listed_public_host_without_auth(tmp_path: Path) -> None:
    handler = Recorder()
    with client_for(make_settings(tmp_path, allowed_image_hosts="93.184.216.34"), handler) as client:
        assert client.fetch_image("http://93.184.216.34/a.jpg") == PNG
    assert "authorization" not in handler.last.headers


def test_fetch_image_refuses_redirect_from_allowed_host_to_private_address(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data"})

    settings = make_settings(tmp_path, allowed_image_hosts="93.184.216.34")
    with LabelStudioClient(settings, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ImageAccessError, match="ALLOWED_IMAGE_HOSTS"):
            client.fetch_image("http://93.184.216.34/a.jpg")


def test_fetch_image_reads_file_url_when_private_allowed(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(PNG)
    with client_for(make_settings(tmp_path, allow_private_image_urls=True), Recorder()) as client:
        assert client.fetch_image(image.as_uri()) == PNG


@pytest.mark.parametrize(
    "headers",
    [pytest.param({"content-length": "1000"}, id="declared-length"), pytest.param({}, id="streamed-body")],
)
def test_fetch_image_refuses_body_over_byte_limit(tmp_path: Path, headers: dict) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if headers:
            return httpx.Response(200, content=b"x" * 1000, headers=headers)
        return httpx.Response(200, content=iter([b"x" * 600, b"x" * 600]))

    with LabelStudioClient(make_settings(tmp_path, max_image_bytes=500), transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(ImageAccessError, match="MAX_IMAGE_BYTES"):
            c.fetch_image("/data/upload/1/a.jpg")


def test_fetch_image_reports_http_error_with_status(tmp_path: Path) -> None:
    with client_for(make_settings(tmp_path), Recorder()) as client, pytest.raises(ImageAccessError, match="404"):
        client.fetch_image("/missing.jpg")


def test_fetch_image_reports_timeout(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with LabelStudioClient(make_settings(tmp_path), transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ImageAccessError, match="timed out"):
            client.fetch_image("/data/upload/1/a.jpg")


def test_fetch_image_requires_ls_url_for_relative_reference(tmp_path: Path) -> None:
    with client_for(make_settings(tmp_path, label_studio_url=None), Recorder()) as client:
        with pytest.raises(ImageAccessError, match="LABEL_STUDIO_URL"):
            client.fetch_image("/data/upload/1/a.jpg")


def test_fetch_image_serves_second_request_from_cache(tmp_path: Path) -> None:
    handler = Recorder()
    with client_for(make_settings(tmp_path), handler) as client:
        first = client.fetch_image("/data/upload/1/a.jpg")
        second = client.fetch_image("/data/upload/1/a.jpg")
    assert first == second == PNG
    assert len(handler.requests) == 1
    assert list((tmp_path / "cache" / "images").rglob("*"))


def test_get_json_and_post_json_return_decoded_body(tmp_path: Path) -> None:
    handler = Recorder()
    with client_for(make_settings(tmp_path), handler) as client:
        assert client.get_json("/api/projects/3") == {"id": 3}
        assert handler.last.headers["authorization"] == f"Token {LEGACY_TOKEN}"
        with pytest.raises(LabelStudioError, match="did not answer JSON"):
            client.post_json("/api/predictions/", {"task": 1})


def test_get_json_raises_label_studio_error_on_connection_failure(tmp_path: Path) -> None:
    from tests.processes import free_port

    settings = make_settings(tmp_path, label_studio_url=f"http://127.0.0.1:{free_port()}")
    with LabelStudioClient(settings) as client, pytest.raises(LabelStudioError, match="failed"):
        client.get_json("/api/projects/3")


@pytest.mark.parametrize(
    ("legacy_enabled", "use_pat"),
    [pytest.param(True, False, id="legacy-token"), pytest.param(False, True, id="pat-refresh-bearer")],
)
def test_fetch_image_downloads_from_real_loopback_ls(
    tmp_path: Path, ena24_dir: Path, legacy_enabled: bool, use_pat: bool
) -> None:
    fake = FakeLabelStudio(ena24_dir, legacy_enabled=legacy_enabled)
    with serve_in_thread(fake.app()) as url:
        key = fake.pat if use_pat else LEGACY_TOKEN
        settings = make_settings(tmp_path, label_studio_url=url, label_studio_api_key=key)
        with LabelStudioClient(settings, use_cache=False) as client:
            data = client.fetch_image("/data/upload/1/2480.jpg")
            presigned = client.fetch_image("s3://bucket/2480.jpg", task_id=7)
            assert client.get_json("/api/projects/3") == {"id": 3, "title": "fake"}
    assert data == presigned == (ena24_dir / "2480.jpg").read_bytes()
    scheme = "Bearer" if use_pat else "Token"
    assert fake.requests[0][1].startswith(scheme)
    assert fake.requests[-1][0] == "/bucket/2480.jpg"
    assert len(fake.issued) == (1 if use_pat else 0)


def test_fetch_image_with_legacy_token_fails_clearly_when_legacy_tokens_off(tmp_path: Path, ena24_dir: Path) -> None:
    fake = FakeLabelStudio(ena24_dir, legacy_enabled=False)
    with serve_in_thread(fake.app()) as url:
        with LabelStudioClient(make_settings(tmp_path, label_studio_url=url)) as client:
            with pytest.raises(ImageAccessError, match="401.*LABEL_STUDIO_API_KEY"):
                client.fetch_image("/data/upload/1/2480.jpg")
