"""The one table from exceptions to HTTP statuses, and the handlers that send them.

Every error body is ``{"detail": "<one sentence>"}`` (:class:`~backend.service.schemas.ErrorResponse`),
request validation errors included (``invalid request: tasks: Field required``): Label Studio shows
that text to the admin as it is. The routes declare which of these answers they give in the OpenAPI
schema with :func:`error_responses` (what each status means is written once, in
:data:`ERROR_MEANINGS`). A traceback never leaves the process.
"""

from __future__ import annotations

import logging
import re
from typing import Any

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
from backend.redaction import redact
from backend.service.schemas import ErrorResponse

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


#: What each error status means, for the OpenAPI schema (the body is always :class:`ErrorResponse`).
ERROR_MEANINGS: dict[int, str] = {
    status.HTTP_400_BAD_REQUEST: "The body cannot be read: not UTF-8 text, or a broken multipart form.",
    status.HTTP_401_UNAUTHORIZED: "Credentials missing or wrong (basic auth; on /webhook, the webhook secret).",
    status.HTTP_404_NOT_FOUND: "No such bundle or job.",
    status.HTTP_409_CONFLICT: "The bundle is incomplete or unreadable, or the version exists in several projects.",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "The body is neither multipart/form-data nor application/json.",
    status.HTTP_422_UNPROCESSABLE_CONTENT: (
        "The request is invalid: the detail names each wrong field (`invalid request: tasks: Field required`,"
        " `malformed JSON body: ...`), or a value this service cannot use (a labeling config without what"
        " it needs, no image in the form)."
    ),
    status.HTTP_502_BAD_GATEWAY: "A Label Studio API call failed.",
    status.HTTP_503_SERVICE_UNAVAILABLE: "Redis is unavailable.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries of a route (or router) that answers ``codes`` with an :class:`ErrorResponse`.

    Declaring 422 here also replaces FastAPI's default 422 entry (a list of errors this service never sends).
    """
    return {code: {"model": ErrorResponse, "description": ERROR_MEANINGS[code]} for code in codes}


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
    detail = redact(f"Redis is unavailable: {exc}" if isinstance(exc, redis.RedisError) else str(exc))
    return JSONResponse({"detail": detail}, status_code=code)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = exc.headers
    allowed = _allowed_methods(request) if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED else []
    if allowed:
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return JSONResponse({"detail": redact(str(exc.detail))}, status_code=exc.status_code, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """The methods the schema documents for this path (Starlette's 405 names only one route's)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\{[^/}]+\}", "[^/]+", template), request.url.path):
            methods |= {method.upper() for method in operations}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": "internal error; the backend's log has the details"},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
