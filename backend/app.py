"""The FastAPI application: ``create_app(settings)`` wires the runtime, Redis, routers and error handlers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from fastapi import FastAPI, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from backend.config import Settings, get_settings
from backend.detector import Detector
from backend.errors import BackendError, BundleError, ConfigurationError, ImageError, LabelConfigError
from backend.metrics import Metrics
from backend.routes import detect, ls, models, training
from backend.runtime import Runtime

logger = logging.getLogger(__name__)

#: Redis timeouts of the request path, in seconds: a Redis outage must not stall /setup or /webhook.
REDIS_CONNECT_TIMEOUT_S = 0.1
REDIS_SOCKET_TIMEOUT_S = 0.5

#: HTTP status of each library error that reaches a handler.
ERROR_STATUS = {
    LabelConfigError: status.HTTP_422_UNPROCESSABLE_CONTENT,
    ImageError: status.HTTP_422_UNPROCESSABLE_CONTENT,
    BundleError: status.HTTP_409_CONFLICT,
    ConfigurationError: status.HTTP_503_SERVICE_UNAVAILABLE,
}


def create_app(settings: Settings | None = None, *, detector: Detector | None = None) -> FastAPI:
    """Build the service. The detector is loaded when the app starts (lifespan), once per process.

    Args:
        settings: The configuration; defaults to :func:`backend.config.get_settings`.
        detector: An already loaded detector to use instead (tests share one between apps).

    Raises:
        ConfigurationError: at start-up, when the detector cannot be loaded (the app refuses to start).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = detector or await run_in_threadpool(Detector.load, settings)
        connection = redis.Redis.from_url(
            settings.effective_redis_url,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        )
        runtime = Runtime(settings, loaded, metrics=Metrics(), redis_client=connection)
        app.state.redis = connection
        app.state.runtime = runtime
        runtime.start_watcher()
        logger.info("serving model %s", runtime.model_version(settings.default_project, load=False))
        try:
            yield
        finally:
            runtime.close()
            connection.close()

    app = FastAPI(
        title="Camtrap ML Backend",
        summary="Label Studio ML backend: MegaDetector boxes and species for camera-trap photos",
        lifespan=lifespan,
    )
    app.state.settings = settings
    for router in (ls.router, detect.router, training.router, models.router):
        app.include_router(router)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(BackendError, _backend_error)
    app.add_exception_handler(Exception, _unexpected_error)
    return app


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    json_error = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if json_error is not None:
        reason = (json_error.get("ctx") or {}).get("error", "invalid JSON")
        detail = f"malformed JSON body: {reason}"
    else:
        detail = "invalid request: " + "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}" for e in errors
        )
    return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _backend_error(request: Request, exc: BackendError) -> JSONResponse:
    code = next((c for t, c in ERROR_STATUS.items() if isinstance(exc, t)), status.HTTP_500_INTERNAL_SERVER_ERROR)
    if code >= 500:
        logger.error("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": str(exc)}, status_code=code)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": "internal error; the backend's log has the details"},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
