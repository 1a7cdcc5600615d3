"""Basic auth on the routes Label Studio calls; the webhook shared secret."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from backend.config import Settings
from backend.service.app import create_app
from backend.service.deps import require_webhook_secret
from backend.vision.detector import Detector
from tests.backend.conftest import running_app

USER, PASSWORD = "ls", "s3cret"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("GET", "/health", None, id="health"),
        pytest.param("GET", "/", None, id="root"),
        pytest.param("POST", "/setup", {"project": "1"}, id="setup"),
        pytest.param("POST", "/predict", {"tasks": []}, id="predict"),
        pytest.param("POST", "/v1/detect", {"urls": ["/x.jpg"]}, id="detect"),
        pytest.param("GET", "/metrics", None, id="metrics"),
    ],
)
def test_ls_routes_require_basic_auth_when_configured(
    settings_factory: Callable[..., Settings], detector: Detector, method: str, path: str, body: dict | None
) -> None:
    settings = settings_factory(basic_auth_user=USER, basic_auth_pass=PASSWORD)
    with running_app(settings, detector) as url:
        anonymous = httpx.request(method, url + path, json=body)
        wrong = httpx.request(method, url + path, json=body, auth=(USER, "nope"))
        right = httpx.get(url + "/health", auth=(USER, PASSWORD)) if method == "GET" else None
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    if right is not None:
        assert right.status_code == 200


def test_predict_with_right_credentials_is_answered(
    settings_factory: Callable[..., Settings], detector: Detector, label_config: str
) -> None:
    settings = settings_factory(basic_auth_user=USER, basic_auth_pass=PASSWORD)
    tasks = [{"id": 1, "data": {"image": "/data/upload/1/2480.jpg"}}]
    with running_app(settings, detector) as url:
        response = httpx.post(
            f"{url}/predict",
            json={"tasks": tasks, "project": "1", "label_config": label_config},
            auth=(USER, PASSWORD),
            timeout=120,
        )
    assert response.status_code == 200 and len(response.json()["results"]) == 1


def webhook_client(secret: str | None) -> TestClient:
    app = FastAPI()
    app.state.settings = Settings(webhook_secret=secret)

    @app.post("/webhook", dependencies=[Depends(require_webhook_secret)])
    def webhook() -> dict:
        return {"status": "ok"}

    return TestClient(app)


@pytest.mark.parametrize(
    ("secret", "kwargs", "status"),
    [
        pytest.param(None, {}, 200, id="unset-open"),
        pytest.param("hook-secret", {}, 401, id="missing"),
        pytest.param("hook-secret", {"headers": {"X-Webhook-Secret": "wrong"}}, 401, id="wrong-header"),
        pytest.param("hook-secret", {"headers": {"X-Webhook-Secret": "hook-secret"}}, 200, id="header"),
        pytest.param("hook-secret", {"params": {"secret": "hook-secret"}}, 200, id="query"),
        pytest.param("hook-secret", {"auth": (USER, PASSWORD)}, 401, id="basic-auth-is-not-the-secret"),
    ],
)
def test_webhook_secret_dependency(secret: str | None, kwargs: dict, status: int) -> None:
    with webhook_client(secret) as client:
        assert client.post("/webhook", json={"action": "ANNOTATION_CREATED"}, **kwargs).status_code == status


def _security(schema: dict, path: str, method: str = "post") -> list[dict]:
    return schema["paths"][path][method].get("security", [])


def test_openapi_declares_basic_auth_and_the_webhook_secret_as_security_schemes(
    settings_factory: Callable[..., Settings], detector: Detector
) -> None:
    settings = settings_factory(basic_auth_user=USER, basic_auth_pass=PASSWORD, webhook_secret="hook-secret")
    with TestClient(create_app(settings, detector=detector)) as client:
        schema = client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["HTTPBasic"] == {
        "type": "http",
        "scheme": "basic",
        "description": schemes["HTTPBasic"]["description"],
    }
    assert (schemes["WebhookSecretHeader"]["in"], schemes["WebhookSecretHeader"]["name"]) == (
        "header",
        "X-Webhook-Secret",
    )
    assert (schemes["WebhookSecretQuery"]["in"], schemes["WebhookSecretQuery"]["name"]) == ("query", "secret")
    # One requirement object per scheme: any one of them passes.
    assert sorted(_security(schema, "/webhook"), key=str) == [
        {"HTTPBasic": []},
        {"WebhookSecretHeader": []},
        {"WebhookSecretQuery": []},
    ]
    assert _security(schema, "/predict") == [{"HTTPBasic": []}]
    assert _security(schema, "/health", "get") == [{"HTTPBasic": []}]
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, method in [("/predict", "post"), ("/webhook", "post"), ("/jobs/{job_id}", "get")]:
        responses = schema["paths"][path][method]["responses"]
        assert responses["401"]["content"]["application/json"]["schema"] == error
        assert responses["422"]["content"]["application/json"]["schema"] == error
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_openapi_declares_no_auth_the_settings_leave_off(
    settings_factory: Callable[..., Settings], detector: Detector
) -> None:
    with TestClient(create_app(settings_factory(), detector=detector)) as client:
        schema = client.get("/openapi.json").json()
        webhook = client.post("/webhook", json={"action": "PROJECT_CREATED"})
    assert webhook.status_code == 200
    assert "securitySchemes" not in schema.get("components", {}) or not schema["components"]["securitySchemes"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "security" not in operation, f"{method} {path}"
            assert "401" not in operation["responses"], f"{method} {path}"


def test_method_not_allowed_lists_every_method_of_the_path(
    settings_factory: Callable[..., Settings], detector: Detector
) -> None:
    with TestClient(create_app(settings_factory(), detector=detector)) as client:
        response = client.put("/jobs/train-1")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD"
