"""The one table from exceptions to HTTP statuses, and the handlers that send them.

Every error body is ``{"detail": "<one sentence>"}`` (:class:`~backend.service.schemas.ErrorResponse`),
request validation errors included (``invalid request: tasks: Field required``): Label Studio shows
that text to the admin as it is. The routes declare these answers in the OpenAPI schema
(:data:`ERROR_RESPONSES`). A traceback never leaves the process.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.errors import (
    BackendError,
    BundleError,
    BundleNotFoundError,
    ConfigurationError,
    ImageError,
    InvalidProjectError,
    LabelConfigError,
    LabelStudioError,
)

logger = logging.getLogger(__name__)

#: HTTP status of each error that reaches a handler; the first matching class wins (subclasses first).
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (InvalidProjectError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (LabelConfigError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (ImageError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (BundleNotFoundError, status.HTTP_404_NOT_FOUND),
    (BundleError, status.HTTP_409_CONFLICT),
    (LabelStudioError, status.HTTP_502_BAD_GATEWAY),
    (ConfigurationError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (redis.RedisError, status.HTTP_503_SERVICE_UNAVAILABLE),
)


def status_of(exc: Exception) -> int:
    """The HTTP status :data:`ERROR_STATUS` gives ``exc`` (500 for anything it does not list)."""
    return next((code for kind, code in ERROR_STATUS if isinstance(exc, kind)), status.HTTP_500_INTERNAL_SERVER_ERROR)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(BackendError, _known_error)
    app.add_exception_handler(redis.RedisError, _known_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)


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


async def _known_error(request: Request, exc: Exception) -> JSONResponse:
    code = status_of(exc)
    if code >= 500:
        logger.error("%s %s: %s", request.method, request.url.path, exc)
    detail = f"Redis is unavailable: {exc}" if isinstance(exc, redis.RedisError) else str(exc)
    return JSONResponse({"detail": detail}, status_code=code)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": "internal error; the backend's log has the details"},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
