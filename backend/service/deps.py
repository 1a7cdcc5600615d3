"""FastAPI dependencies: the process's settings, Redis client and runtime, and the auth checks.

Routes read ``settings: SettingsDep, runtime: RuntimeDep, connection: RedisDep`` and protect
themselves with ``dependencies=[Depends(require_ls_auth)]`` (routes Label Studio calls) or
``dependencies=[Depends(require_webhook_auth)]`` (``/webhook``: the webhook secret or basic auth).
The credentials are read through FastAPI's security classes, so the OpenAPI schema declares them as
security schemes: ``HTTPBasic``, ``WebhookSecretHeader`` (``X-Webhook-Secret``) and
``WebhookSecretQuery`` (``?secret=``); :func:`document_auth` drops the ones the settings leave off.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import redis
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPBasic, HTTPBasicCredentials

from backend.config import Settings
from backend.service.runtime import Runtime

#: Header (or ``?secret=`` query parameter) that carries ``WEBHOOK_SECRET``.
WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"
WEBHOOK_SECRET_QUERY = "secret"

#: Security scheme names in the OpenAPI schema.
BASIC_SCHEME = "HTTPBasic"
SECRET_HEADER_SCHEME = "WebhookSecretHeader"
SECRET_QUERY_SCHEME = "WebhookSecretQuery"

_basic = HTTPBasic(
    auto_error=False,
    realm="camtrap",
    scheme_name=BASIC_SCHEME,
    description="BASIC_AUTH_USER / BASIC_AUTH_PASS: the user and password set on the model in Label Studio.",
)
_secret_header = APIKeyHeader(
    name=WEBHOOK_SECRET_HEADER,
    auto_error=False,
    scheme_name=SECRET_HEADER_SCHEME,
    description="WEBHOOK_SECRET, as a header of the Label Studio webhook.",
)
_secret_query = APIKeyQuery(
    name=WEBHOOK_SECRET_QUERY,
    auto_error=False,
    scheme_name=SECRET_QUERY_SCHEME,
    description="WEBHOOK_SECRET, appended to the webhook URL as ?secret=.",
)
BasicCredentials = Annotated[HTTPBasicCredentials | None, Depends(_basic)]


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


def require_ls_auth(settings: SettingsDep, credentials: BasicCredentials) -> None:
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


def require_webhook_secret(
    settings: SettingsDep,
    header: Annotated[str | None, Depends(_secret_header)],
    query: Annotated[str | None, Depends(_secret_query)],
) -> None:
    """When ``WEBHOOK_SECRET`` is set, require it in ``X-Webhook-Secret`` or ``?secret=``.

    When it is unset, ``/webhook`` is open: Label Studio's auto-created webhook sends no credentials
    (add the header to that webhook in Label Studio, or append ``?secret=`` to its URL).

    Raises:
        HTTPException: 401 when the secret is set and missing or wrong.
    """
    expected = settings.webhook_secret
    if not expected:
        return
    if not _same(header or query or "", expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"webhook secret required: send the {WEBHOOK_SECRET_HEADER} header or ?secret= with WEBHOOK_SECRET",
        )


def require_webhook_auth(
    settings: SettingsDep,
    credentials: BasicCredentials,
    header: Annotated[str | None, Depends(_secret_header)],
    query: Annotated[str | None, Depends(_secret_query)],
) -> None:
    """The webhook secret, or the basic-auth credentials Label Studio sends with START_TRAINING.

    Label Studio's "Start Training" posts to ``/webhook`` with the model's basic auth but cannot add the
    secret header, while its webhook deliveries carry the header but no basic auth: either one passes.

    Raises:
        HTTPException: 401 when neither passes.
    """
    try:
        require_webhook_secret(settings, header, query)
    except HTTPException:
        if credentials is None or not (settings.basic_auth_user or settings.basic_auth_pass):
            raise
        require_ls_auth(settings, credentials)


def document_auth(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Make the OpenAPI ``schema`` say what these checks do with ``settings``; changes and returns it.

    Without ``BASIC_AUTH_USER``/``BASIC_AUTH_PASS`` basic auth is not required anywhere; without
    ``WEBHOOK_SECRET`` ``/webhook`` is open. An operation left without security loses its 401 answer.
    """
    basic_on = bool(settings.basic_auth_user or settings.basic_auth_pass)
    secret_schemes = {SECRET_HEADER_SCHEME, SECRET_QUERY_SCHEME}
    used: set[str] = set()
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            requirements: list[dict[str, list[str]]] = operation.get("security", [])
            if not requirements:
                continue
            names = {name for requirement in requirements for name in requirement}
            if names & secret_schemes and not settings.webhook_secret:
                kept = []
            else:
                kept = [r for r in requirements if basic_on or BASIC_SCHEME not in r]
            if kept:
                operation["security"] = kept
                used |= {name for requirement in kept for name in requirement}
            else:
                del operation["security"]
                operation.get("responses", {}).pop(str(status.HTTP_401_UNAUTHORIZED), None)
    schemes = schema.get("components", {}).get("securitySchemes", {})
    for name in set(schemes) - used:
        del schemes[name]
    return schema
