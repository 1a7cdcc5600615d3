"""The FastAPI application: ``create_app(settings)`` wires the runtime, Redis, routers and error handlers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from backend import redaction
from backend.config import Settings, get_settings
from backend.contracts.redis_client import REQUEST, connect
from backend.service import http_errors
from backend.service.body_limit import BodySizeLimit
from backend.service.deps import document_auth
from backend.service.metrics import Metrics
from backend.service.routes import detect, ls, models, training
from backend.service.runtime import Runtime
from backend.vision.detector import Detector
from backend.vision.device import set_cpu_threads

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, detector: Detector | None = None) -> FastAPI:
    """Build the service. The detector is loaded when the app starts (lifespan), once per process.

    Args:
        settings: The configuration; defaults to :func:`backend.config.get_settings`.
        detector: An already loaded detector to use instead (tests share one between apps).

    Raises:
        ConfigurationError: at start-up, when the detector cannot be loaded (the app refuses to start).
    """
    config = settings or get_settings()
    redaction.install(*config.secrets)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threads = set_cpu_threads(config.torch_threads, config.workers)
        logger.info("torch uses %d intra-op thread(s) in this process", threads)
        loaded = detector if detector is not None else await run_in_threadpool(Detector.load, config)
        connection = connect(config.effective_redis_url, REQUEST)
        runtime = Runtime(config, loaded, metrics=Metrics(), redis_client=connection)
        app.state.redis = connection
        app.state.runtime = runtime
        runtime.start_watcher()
        logger.info("serving model %s", runtime.model_version(config.default_project, load=False))
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
    app.state.settings = config
    for router in (ls.router, detect.router, training.router, models.router):
        app.include_router(router)
    http_errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=config.max_request_bytes)
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_auth(generate_openapi(), config)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
