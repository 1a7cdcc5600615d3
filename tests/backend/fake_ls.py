"""The fake Label Studio of every test and benchmark, over real HTTP: media, auth and projects.

:class:`FakeLabelStudio` serves task images (uploads, local files, storage data, presigned cloud
URLs) and checks credentials the way Label Studio 1.23 does: ``Token <legacy>`` while legacy tokens
are on, ``Bearer <access>`` for an access token obtained at ``POST /api/token/refresh/`` from the
PAT. It also holds tasks and predictions and answers the task and prediction APIs as Label Studio
1.23 does: ``GET /api/tasks/?project=&page=&page_size=&query=`` (``{"tasks", "total"}``, 404 past
the last page, ``query``'s ``selectedItems`` picking tasks by id), ``GET /api/tasks/<id>/`` (with its
annotations and predictions), ``POST /api/predictions/`` and the bulk
``POST /api/projects/<id>/import/predictions``, which, like 1.23's legacy path, drops a
prediction whose ``from_name`` is not in the label config and still answers ``201 {"created": n}``.
:class:`Fault` makes chosen requests answer 500/503 or hang, before or after they are carried out.
``tests/trainer/fake_label_studio.py`` extends it with a project's export and task import
(:class:`~tests.trainer.fake_label_studio.FakeProject`), for the trainer's side.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from tests.processes import free_port

LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"


def make_jwt(claims: dict) -> str:
    """An unsigned JWT-shaped token (the backend only reads its claims)."""

    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def make_pat(lifetime_s: float = 3600 * 24 * 365) -> str:
    return make_jwt({"token_type": "refresh", "exp": int(time.time() + lifetime_s), "user_id": 1})


@dataclass
class Fault:
    """Label Studio failing: the next ``times`` requests of ``method`` on paths starting with ``path`` fail.

    Each is answered ``status`` (after ``hang_s`` seconds, to play a timeout against a short
    ``LABEL_STUDIO_TIMEOUT_S``); with ``applied`` the request is carried out first (its predictions are
    stored) and only its answer is lost, as when Label Studio times out after writing. ``times=-1``: forever.
    ``hits`` counts the requests it failed.
    """

    path: str
    method: str = "GET"
    status: int = 500
    times: int = 1
    hang_s: float = 0.0
    applied: bool = False
    hits: int = 0

    def takes(self, method: str, path: str) -> bool:
        return method == self.method and path.startswith(self.path) and (self.times < 0 or self.hits < self.times)


@dataclass
class FakeLabelStudio:
    """State of the fake: which credentials work, and what it saw."""

    image_dir: Path
    legacy_enabled: bool = True
    pat: str = field(default_factory=make_pat)
    access_lifetime_s: float = 300.0
    issued: list[str] = field(default_factory=list)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    delay_s: float = 0.0
    tasks: list[dict] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)
    """Every prediction posted (single or bulk), as sent, in order."""
    post_delay_s: float = 0.0
    """Each ``POST /api/predictions/`` takes this long (a slow Label Studio, to kill a worker mid-chunk)."""
    bulk_calls: list[int] = field(default_factory=list)
    """The size of each bulk import call."""
    faults: list[Fault] = field(default_factory=list)
    """Requests to fail (the first matching fault with tries left wins); see :class:`Fault`."""
    calls: list[tuple[str, str]] = field(default_factory=list)
    """(method, path) of every API request (``/api/...``), answered or failed, in order."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def authorized(self, header: str | None) -> bool:
        if not header:
            return False
        kind, _, value = header.partition(" ")
        if kind == "Token":
            return self.legacy_enabled and value == LEGACY_TOKEN
        return kind == "Bearer" and value in self.issued

    def check(self, request: Request) -> None:
        """Refuse the request as Label Studio does when its credentials are missing or wrong."""
        if not self.authorized(request.headers.get("authorization")):
            raise HTTPException(401, "Authentication credentials were not provided.")

    def project_info(self, project: int) -> dict:
        """The body of ``GET /api/projects/<id>``."""
        return {"id": project, "title": "fake"}

    def task_predictions(self, task_id: int) -> list[dict]:
        return [{"id": i + 1, **p} for i, p in enumerate(self.predictions) if p.get("task") == task_id]

    def task_view(self, task: dict) -> dict:
        """A task as ``GET /api/tasks/<id>/`` shows it: data, annotations, predictions and their counts."""
        annotations = task.get("annotations") or []
        predictions = self.task_predictions(task["id"])
        return {
            "id": task["id"],
            "data": task["data"],
            "annotations": annotations,
            "predictions": predictions,
            "total_annotations": sum(1 for a in annotations if not a.get("was_cancelled")),
            "cancelled_annotations": sum(1 for a in annotations if a.get("was_cancelled")),
            "total_predictions": len(predictions),
        }

    def config_names(self, project: int) -> set[str]:
        """The control and object tag names of the project's label config."""
        return set(re.findall(r'\bname="([^"]+)"', self.project_info(project).get("label_config") or ""))

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def fail_on_purpose(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            method, path = request.method, request.url.path
            if path.startswith("/api/"):
                self.calls.append((method, path))
            fault = next((f for f in self.faults if f.takes(method, path)), None)
            if fault is None:
                return await call_next(request)
            fault.hits += 1
            if fault.applied:
                await call_next(request)
            if fault.hang_s:
                await asyncio.sleep(fault.hang_s)
            return JSONResponse({"detail": f"fault injected by the test ({fault.status})"}, status_code=fault.status)

        def serve(request: Request, name: str) -> FileResponse:
            self.requests.append((str(request.url.path), request.headers.get("authorization")))
            if self.delay_s:
                time.sleep(self.delay_s)
            self.check(request)
            path = self.image_dir / Path(name).name
            if not path.is_file():
                raise HTTPException(404, "not found")
            return FileResponse(path)

        @app.post("/api/token/refresh/")
        def refresh(body: dict) -> dict:
            if body.get("refresh") != self.pat:
                raise HTTPException(401, "Token is invalid or expired")
            access = make_jwt({"token_type": "access", "exp": int(time.time() + self.access_lifetime_s)})
            self.issued.append(access)
            return {"access": access}

        @app.get("/data/upload/{project}/{name}")
        def upload(request: Request, project: int, name: str) -> FileResponse:
            return serve(request, name)

        @app.get("/data/local-files/")
        def local_files(request: Request, d: str) -> FileResponse:
            return serve(request, d)

        @app.get("/storage-data/uploaded/")
        def storage_data(request: Request, filepath: str) -> FileResponse:
            return serve(request, filepath)

        @app.get("/tasks/{task_id}/presign/")
        def presign(request: Request, task_id: int, fileuri: str) -> RedirectResponse:
            self.check(request)
            uri = base64.urlsafe_b64decode(fileuri.encode()).decode()
            return RedirectResponse(f"/bucket/{Path(uri).name}?X-Amz-Signature=abc", status_code=303)

        @app.get("/bucket/{name}")
        def bucket(request: Request, name: str) -> FileResponse:
            self.requests.append((str(request.url.path), request.headers.get("authorization")))
            path = self.image_dir / Path(name).name
            if not path.is_file():
                raise HTTPException(404, "not found")
            return FileResponse(path)

        @app.get("/api/projects/{project}")
        def project(request: Request, project: int) -> dict:
            self.check(request)
            return self.project_info(project)

        @app.get("/api/tasks/")
        @app.get("/api/tasks")
        def list_tasks(
            request: Request, project: int, page: int = 1, page_size: int = 100, query: str | None = None
        ) -> dict:
            self.requests.append((str(request.url.path), request.headers.get("authorization")))
            self.check(request)
            # The Data Manager's selection: {"selectedItems": {"all": false, "included": [ids]}} (or all but excluded).
            selected = (json.loads(query) if query else {}).get("selectedItems") or {"all": True, "excluded": []}
            with self.lock:
                views = [self.task_view(t) for t in self.tasks]
            if selected.get("all", True):
                views = [v for v in views if v["id"] not in set(selected.get("excluded") or [])]
            else:
                views = [v for v in views if v["id"] in set(selected.get("included") or [])]
            if page < 1 or (page > 1 and (page - 1) * page_size >= len(views)):
                raise HTTPException(404, "Invalid page.")
            return {"tasks": views[(page - 1) * page_size : page * page_size], "total": len(views)}

        @app.get("/api/tasks/{task_id}/")
        @app.get("/api/tasks/{task_id}")
        def get_task(request: Request, task_id: int) -> dict:
            self.check(request)
            with self.lock:
                found = [self.task_view(t) for t in self.tasks if t["id"] == task_id]
            if not found:
                raise HTTPException(404, "Not found.")
            return found[0]

        @app.get("/api/predictions/")
        @app.get("/api/predictions")
        def list_predictions(request: Request, project: int | None = None, task: int | None = None) -> list[dict]:
            self.check(request)
            return [
                {"id": i + 1, **p}
                for i, p in enumerate(self.predictions)
                if (project is None or p.get("project", project) == project) and (task is None or p["task"] == task)
            ]

        @app.post("/api/predictions/")
        @app.post("/api/predictions")
        async def predictions(request: Request) -> dict:
            self.check(request)
            body = await request.json()
            if self.post_delay_s:
                time.sleep(self.post_delay_s)
            with self.lock:
                self.predictions.append(body)
                return {"id": len(self.predictions), **body}

        @app.post("/api/projects/{project}/import/predictions", status_code=201)
        async def import_predictions(request: Request, project: int) -> dict:
            self.check(request)
            body = await request.json()
            names = self.config_names(project)
            known = {t["id"] for t in self.tasks}
            valid = [
                p
                for p in body
                if p.get("task") in known and all(r.get("from_name") in names for r in p.get("result") or [])
            ]
            with self.lock:
                self.bulk_calls.append(len(body))
                self.predictions.extend(valid)
            return {"created": len(valid)}

        return app


@contextmanager
def serve_in_thread(app: object, port: int | None = None, timeout_s: float = 20.0) -> Iterator[str]:
    """Run an ASGI app with uvicorn on loopback in a thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on port {port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
