"""FastAPI dependencies: the process's settings, Redis client and runtime, and the two auth checks.

Routes read ``settings: SettingsDep, runtime: RuntimeDep, connection: RedisDep`` and protect
themselves with ``dependencies=[Depends(require_ls_auth)]`` (routes Label Studio calls) or
``dependencies=[Depends(require_webhook_secret)]`` (``/webhook``).
"""

from __future__ import annotations

import secrets
from typing import Annotated

import redis
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from backend.config import Settings
from backend.service.runtime import Runtime

#: Header (or ``?secret=`` query parameter) that carries ``WEBHOOK_SECRET``.
WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"

_basic = HTTPBasic(auto_error=False, realm="camtrap")


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_redis(request: Request) -> redis.Redis:
    return request.app.state.redis


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def require_ls_auth(
    settings: SettingsDep, credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)]
) -> None:
    """HTTP basic auth when ``BASIC_AUTH_USER``/``BASIC_AUTH_PASS`` are set; open otherwise.

    Raises:
        HTTPException: 401 with ``WWW-Authenticate: Basic`` when the credentials are missing or wrong.
    """
    user, password = settings.basic_auth_user, settings.basic_auth_pass
    if not user and not password:
        return
    if credentials is not None:
        user_ok = _same(credentials.username, user or "")
        password_ok = _same(credentials.password, password or "")
        if user_ok and password_ok:
            return
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "basic authentication required: set the same user and password on the model in Label Studio",
        headers={"WWW-Authenticate": 'Basic realm="camtrap"'},
    )


def require_webhook_secret(request: Request, settings: SettingsDep) -> None:
    """When ``WEBHOOK_SECRET`` is set, require it in ``X-Webhook-Secret`` or ``?secret=``.

    When it is unset, ``/webhook`` is open: Label Studio's auto-created webhook sends no credentials
    (add the header to that webhook in Label Studio, or append ``?secret=`` to its URL).

    Raises:
        HTTPException: 401 when the secret is set and missing or wrong.
    """
    expected = settings.webhook_secret
    if not expected:
        return
    given = request.headers.get(WEBHOOK_SECRET_HEADER) or request.query_params.get("secret") or ""
    if not _same(given, expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"webhook secret required: send the {WEBHOOK_SECRET_HEADER} header or ?secret= with WEBHOOK_SECRET",
        )
