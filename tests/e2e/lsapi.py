"""A thin driver for Label Studio's REST API: the calls a user's clicks make, nothing more.

Every call checks its status and fails with the method, path, status and body, so a broken step
says where it broke. Authentication is the caller's choice of ``httpx.Client``: a logged-in browser
session (:func:`login`), a personal access token (:class:`PersonalAccessTokenAuth`, refresh -> Bearer)
or a legacy token (``Authorization: Token ...``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

#: Label Studio's access tokens live 300 s; refresh a little before that.
ACCESS_TOKEN_REFRESH_S = 240.0
#: Generous per-request timeout: "Retrieve predictions" and "Start Training" run inside LS's request.
REQUEST_TIMEOUT_S = 180.0


class LabelStudioError(AssertionError):
    """A Label Studio API call answered with an unexpected status."""


def check(response: httpx.Response, *expected: int) -> httpx.Response:
    """Return ``response`` if its status is one of ``expected`` (default: any 2xx), else fail loudly."""
    ok = response.status_code in expected if expected else response.is_success
    if not ok:
        request = response.request
        raise LabelStudioError(f"{request.method} {request.url} -> HTTP {response.status_code}: {response.text[:2000]}")
    return response


class PersonalAccessTokenAuth(httpx.Auth):
    """``Authorization: Bearer <access>``, the access token obtained from the PAT at /api/token/refresh/."""

    def __init__(self, base_url: str, personal_access_token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.refresh_token = personal_access_token
        self._access: str | None = None
        self._obtained = 0.0
        self._lock = threading.Lock()

    def access_token(self) -> str:
        with self._lock:
            if self._access is None or time.monotonic() - self._obtained > ACCESS_TOKEN_REFRESH_S:
                response = check(
                    httpx.post(f"{self.base_url}/api/token/refresh/", json={"refresh": self.refresh_token}, timeout=30)
                )
                self._access = response.json()["access"]
                self._obtained = time.monotonic()
            return self._access

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.access_token()}"
        yield request


class LegacyTokenAuth(httpx.Auth):
    """``Authorization: Token <key>``: works only while the organization allows legacy tokens."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Token {self.token}"
        yield request


def login(base_url: str, email: str, password: str) -> httpx.Client:
    """A client logged in through the login form, as a browser is (session cookie + CSRF header)."""
    client = httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S, follow_redirects=False)
    check(client.get("/user/login/"))
    response = client.post(
        "/user/login/",
        data={"email": email, "password": password, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        headers={"Referer": f"{base_url}/user/login/"},
    )
    if response.status_code != 302 or "sessionid" not in client.cookies:
        raise LabelStudioError(f"logging in as {email} failed: HTTP {response.status_code} {response.text[:500]}")
    client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
    client.headers["Referer"] = base_url
    return client


def create_personal_access_token(session: httpx.Client) -> str:
    """Create the user's personal access token (a JWT refresh token), as Account & Settings does."""
    return check(session.post("/api/token/"), 201).json()["token"]


def legacy_token(session: httpx.Client) -> str:
    """The user's legacy API token (usable only when the organization enables legacy tokens)."""
    return check(session.get("/api/current-user/token")).json()["token"]


def set_token_settings(client: httpx.Client, *, personal: bool, legacy: bool) -> dict[str, bool]:
    """Organization -> Access Token Settings: which kinds of API token LS accepts."""
    body = {"api_tokens_enabled": personal, "legacy_api_tokens_enabled": legacy}
    settings = check(client.post("/api/jwt/settings", json=body)).json()
    assert settings == body, f"/api/jwt/settings answered {settings}, expected {body}"
    return settings


class LabelStudioAPI:
    """Project, task, ML-backend and webhook calls, through an authenticated client."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    # --- projects and tasks ---------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        return check(self.client.get("/api/current-user/whoami")).json()

    def create_project(self, title: str, label_config: str) -> dict[str, Any]:
        body = {"title": title, "label_config": label_config}
        return check(self.client.post("/api/projects", json=body), 201).json()

    def project(self, project_id: int) -> dict[str, Any]:
        return check(self.client.get(f"/api/projects/{project_id}")).json()

    def import_images(self, project_id: int, paths: Iterable[Path]) -> dict[str, Any]:
        """Upload image files in one multipart import; each file under its own field name (one task each)."""
        files = {f"file{i}": (path.name, path.read_bytes(), "image/jpeg") for i, path in enumerate(paths)}
        return check(self.client.post(f"/api/projects/{project_id}/import", files=files), 201).json()

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project, with annotations and predictions."""
        tasks: list[dict[str, Any]] = []
        page = 1
        while True:
            response = self.client.get(
                "/api/tasks", params={"project": project_id, "page": page, "page_size": 100, "fields": "all"}
            )
            if response.status_code == 404 and tasks:
                break  # past the last page
            body = check(response).json()
            batch = body["tasks"] if isinstance(body, dict) else body
            tasks.extend(batch)
            total = body.get("total", len(tasks)) if isinstance(body, dict) else len(tasks)
            if not batch or len(tasks) >= total:
                break
            page += 1
        return tasks

    def update_task_data(self, task_id: int, data: Mapping[str, Any]) -> dict[str, Any]:
        return check(self.client.patch(f"/api/tasks/{task_id}", json={"data": dict(data)})).json()

    def predictions(self, project_id: int) -> list[dict[str, Any]]:
        body = check(self.client.get("/api/predictions", params={"project": project_id})).json()
        return body["results"] if isinstance(body, dict) else body

    def create_annotation(
        self, task_id: int, result: list[dict[str, Any]], parent_prediction: int | None = None, lead_time: float = 12.5
    ) -> dict[str, Any]:
        """Submit an annotation as the labeling editor's Submit button does."""
        body: dict[str, Any] = {"result": result, "was_cancelled": False, "ground_truth": False, "lead_time": lead_time}
        if parent_prediction is not None:
            body["parent_prediction"] = parent_prediction
        return check(self.client.post(f"/api/tasks/{task_id}/annotations", json=body), 201).json()

    # --- Data Manager ------------------------------------------------------------------------------
    def retrieve_predictions(self, project_id: int, task_ids: list[int] | None = None) -> dict[str, Any]:
        """Data Manager -> select tasks -> Actions -> Retrieve Predictions (all tasks when ``task_ids`` is None)."""
        selected = {"all": True, "excluded": []} if task_ids is None else {"all": False, "included": task_ids}
        response = self.client.post(
            "/api/dm/actions",
            params={"id": "retrieve_tasks_predictions", "project": project_id},
            json={"selectedItems": selected},
        )
        return check(response).json()

    # --- ML backends and webhooks -------------------------------------------------------------------
    def connect_ml_backend(
        self,
        project_id: int,
        url: str,
        title: str,
        basic_auth: tuple[str, str] | None = None,
        extra_params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Settings -> Model -> Connect Model. LS checks /health and /setup before it saves."""
        body: dict[str, Any] = {"project": project_id, "url": url, "title": title, "is_interactive": False}
        if basic_auth:
            body.update(auth_method="BASIC_AUTH", basic_auth_user=basic_auth[0], basic_auth_pass=basic_auth[1])
        else:
            body["auth_method"] = "NONE"
        if extra_params is not None:
            body["extra_params"] = dict(extra_params)
        return check(self.client.post("/api/ml", json=body), 201).json()

    def ml_backend(self, ml_id: int) -> dict[str, Any]:
        """The model card; LS calls /health and /setup to refresh its state and model_version first."""
        return check(self.client.get(f"/api/ml/{ml_id}")).json()

    def update_ml_backend(
        self, ml_backend: Mapping[str, Any], basic_auth: tuple[str, str] | None = None, **changes: Any
    ) -> dict[str, Any]:
        """Edit a connected model. LS re-checks the connection on every edit, so PATCH must repeat ``url``,
        ``project`` and, with basic auth, the (write-only) credentials."""
        body = {"url": ml_backend["url"], "project": ml_backend["project"], **changes}
        if basic_auth:
            body.update(auth_method="BASIC_AUTH", basic_auth_user=basic_auth[0], basic_auth_pass=basic_auth[1])
        return check(self.client.patch(f"/api/ml/{ml_backend['id']}", json=body)).json()

    def start_training(self, ml_id: int) -> None:
        """The model card's "Start Training": LS posts START_TRAINING to the backend's /webhook."""
        check(self.client.post(f"/api/ml/{ml_id}/train", json={}))

    def webhooks(self, project_id: int) -> list[dict[str, Any]]:
        return check(self.client.get("/api/webhooks", params={"project": project_id})).json()

    def update_webhook(self, webhook: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
        body = {"url": webhook["url"], **changes}
        return check(self.client.patch(f"/api/webhooks/{webhook['id']}", json=body)).json()
