"""Talking to Label Studio: authenticated API calls and task image downloads.

Image references are resolved as Label Studio's own SDK does, but with httpx, bounded timeouts, a
size cap and a URL policy:

==========================================  ====================================================
task value                                  fetched from
==========================================  ====================================================
``/data/upload/...``, ``upload/...``        ``{LS}/data/upload/...`` (with auth)
``/storage-data/...``, ``/data/local-...``  ``{LS}`` + the reference (with auth)
``s3://``, ``gs://``, ``azure-blob://``     ``{LS}/tasks/{task_id}/presign/?fileuri=<base64url>``
``http(s)://`` on LS's host and port        that URL (with auth)
``http(s)://`` elsewhere                    only if the host is in ``ALLOWED_IMAGE_HOSTS`` and does
                                            not resolve to a private or loopback address (without auth),
                                            connecting to the address that was checked
                                            (``backend.labelstudio.checked_connect``: no DNS rebinding)
``file://``                                 only with ``ALLOW_PRIVATE_IMAGE_URLS=true``
==========================================  ====================================================

Authentication: ``LABEL_STUDIO_API_KEY`` holding a personal access token (a JWT refresh token) is
exchanged at ``POST /api/token/refresh/`` and sent as ``Bearer <access>``, refreshed before the
access token's ~300 s expiry; any other key is a legacy token sent as ``Token <key>``. Without a
key, the ``access_token`` from ``/setup`` is sent as ``Token``.

API calls (not image downloads, which have their own time budget) are retried with exponential backoff
(``LABEL_STUDIO_RETRIES``, ``LABEL_STUDIO_RETRY_BACKOFF_S``) on the failures ``backend.labelstudio.retry``
lists; a prediction push re-reads what arrived before it retries, so no task gets a version twice.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

import httpx

from backend.config import Settings
from backend.errors import ImageAccessError, LabelStudioError
from backend.labelstudio.checked_connect import CheckedAddressTransport, non_public, resolve
from backend.labelstudio.image_cache import ImageCache
from backend.labelstudio.retry import TRANSIENT_STATUSES, RetryPolicy, TransientError, may_retry, retrying

logger = logging.getLogger(__name__)

#: Seconds to wait for a TCP connection to Label Studio or an image host.
CONNECT_TIMEOUT_S = 5.0
#: Redirects followed when fetching an image (LS answers presign requests with one).
MAX_REDIRECTS = 3
#: An access token is refreshed when it has less than this many seconds left.
TOKEN_REFRESH_MARGIN_S = 30.0
#: Lifetime assumed for an access token whose expiry cannot be read, in seconds.
DEFAULT_ACCESS_LIFETIME_S = 300.0
#: Cloud storage URI prefixes resolved through the task presign endpoint.
CLOUD_PREFIXES = ("s3://", "gs://", "azure-blob://", "azure-spi://")
TOKEN_REFRESH_PATH = "/api/token/refresh/"
PREDICTIONS_PATH = "/api/predictions/"


class LabelStudioClient:
    """One Label Studio instance: credentials, an httpx client and the image policy.

    Thread-safe: downloads run in worker threads and share the token cache.

    Args:
        settings: Timeouts, size limits, allowed hosts, and the default URL and API key.
        url: Label Studio's base URL; defaults to ``LABEL_STUDIO_URL``.
        api_key: Legacy token or personal access token; defaults to ``LABEL_STUDIO_API_KEY``.
        fallback_token: Legacy token used as ``Token`` when there is no API key (/setup's ``access_token``).
        transport: An httpx transport (tests pass ``httpx.MockTransport``), used for external image hosts too;
            by default those go through :class:`CheckedAddressTransport` (connect to the checked address).
        cache: Where downloaded images are kept; defaults to ``DATA_DIR/cache/images``. Pass
            ``use_cache=False`` to download every time.
        use_cache: Whether :meth:`fetch_image` reads and fills the cache.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        url: str | None = None,
        api_key: str | None = None,
        fallback_token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        cache: ImageCache | None = None,
        use_cache: bool = True,
    ) -> None:
        self.settings = settings
        base = url or settings.label_studio_url
        self.base_url = base.rstrip("/") if base else None
        self._api_key = api_key if api_key is not None else settings.label_studio_api_key
        self._fallback_token = fallback_token
        default_cache = ImageCache(settings.cache_dir / "images", settings.image_cache_max_bytes)
        self._cache = (cache or default_cache) if use_cache else None
        self._http = httpx.Client(transport=transport, follow_redirects=False, trust_env=False)
        # hosts outside Label Studio: every connection is made to an address checked by the URL policy
        self._external = (
            self._http
            if transport is not None
            else httpx.Client(
                transport=CheckedAddressTransport(allow_private=settings.allow_private_image_urls),
                follow_redirects=False,
                trust_env=False,
            )
        )
        self._lock = threading.Lock()
        self._access_token: str | None = None
        self._access_expires_at = 0.0

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()
        self._external.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- API -------------------------------------------------------------------------------

    def get_json(self, path: str, params: dict | None = None, *, timeout: float | None = None) -> Any:
        """``GET`` a Label Studio API path (e.g. ``/api/projects/3``) and return the decoded JSON.

        Raises:
            LabelStudioError: no URL is configured, the connection failed or LS answered an error.
        """
        return self._api("GET", path, params=params, timeout=timeout)

    def post_json(self, path: str, body: object, *, timeout: float | None = None) -> Any:
        """``POST`` JSON to a Label Studio API path and return the decoded JSON answer (None if empty).

        Raises:
            LabelStudioError: no URL is configured, the connection failed or LS answered an error.
        """
        return self._api("POST", path, json=body, timeout=timeout)

    def iter_tasks(self, project: str | int, *, page_size: int = 100, fields: str = "all") -> Iterator[dict]:
        """Every task of ``project``, read page by page (``GET /api/tasks/?project=&page=&page_size=``).

        Label Studio 1.23 answers ``{"tasks": [...], "total": N}`` and 404 for a page past the end;
        both end the iteration, as does a short page.

        Raises:
            LabelStudioError: the connection failed or LS answered another error.
        """
        page = 1
        while True:
            params = {"project": project, "page": page, "page_size": page_size, "fields": fields}
            try:
                body = self.get_json("/api/tasks/", params)
            except LabelStudioError as exc:
                if page > 1 and " answered 404 " in str(exc):
                    return
                raise
            tasks = body.get("tasks", []) if isinstance(body, dict) else list(body or [])
            yield from tasks
            total = body.get("total") if isinstance(body, dict) else None
            if len(tasks) < page_size or (total is not None and page * page_size >= int(total)):
                return
            page += 1

    def get_tasks(self, project: str | int, ids: Sequence[int], *, fields: str = "all") -> list[dict]:
        """The tasks ``ids`` of ``project``, with annotations and predictions, in one list call.

        ``GET /api/tasks/?project=&query={"selectedItems": {"all": false, "included": ids}}``: the task list
        never calls the ML backend (only the deprecated ``evaluate_predictions_automatically`` makes it), unlike
        ``GET /api/tasks/<id>``. Ids that are not in the project are simply missing from the answer.
        """
        if not ids:
            return []
        query = json.dumps({"selectedItems": {"all": False, "included": [int(i) for i in ids]}})
        params = {"project": project, "page": 1, "page_size": len(ids), "fields": fields, "query": query}
        body = self.get_json("/api/tasks/", params)
        return list(body.get("tasks", []) if isinstance(body, dict) else body or [])

    def import_predictions(self, project: str | int, predictions: Sequence[dict]) -> int:
        """Post predictions in bulk (``POST /api/projects/<id>/import/predictions``); returns ``created``.

        Label Studio 1.23 drops predictions that do not fit the label config and still answers 201, so
        the caller compares the count with what it sent.

        Never a task twice: a failed push may still have been applied (a read timeout after Label Studio
        wrote the rows, a 500 after a partial write), so it is not simply resent. Before each retry
        (``LABEL_STUDIO_RETRIES``, backoff ``LABEL_STUDIO_RETRY_BACKOFF_S``) the client reads which of the
        pending tasks now hold a prediction of the same ``model_version`` (``GET /api/predictions/?project=``),
        counts those as created and resends only the others. Two pushes of one version for one task would
        need a second client pushing the same tasks at the same moment (one re-label job per project runs).
        """
        path = f"/api/projects/{project}/import/predictions"
        pending = list(predictions)
        arrived = 0
        tries = 0

        def push() -> int:
            nonlocal pending, arrived, tries
            tries += 1
            if tries > 1:
                present = self._predicted(project, pending)
                arrived += sum(1 for p in pending if _prediction_key(p) in present)
                pending = [p for p in pending if _prediction_key(p) not in present]
                if not pending:
                    return 0
            body = self._api_once("POST", self._ls_url(path, LabelStudioError), None, json=pending)
            return int((body or {}).get("created", 0))

        created = retrying(RetryPolicy.from_settings(self.settings), push, retry_if=lambda _: True)
        return arrived + created

    def create_prediction(self, prediction: dict) -> None:
        """Post one prediction (``POST /api/predictions/``: ``task``, ``result``, ``score``, ``model_version``).

        Retried like :meth:`import_predictions`: before each retry the task's predictions are read again
        (``GET /api/predictions/?task=<id>``; not ``GET /api/tasks/<id>/``, which makes Label Studio 1.23 call
        the backend's ``/predict`` for a task without one) and nothing is resent when one of that version is there.
        """
        url = self._ls_url(PREDICTIONS_PATH, LabelStudioError)
        tries = 0

        def post() -> None:
            nonlocal tries
            tries += 1
            if tries > 1 and _prediction_key(prediction) in self._predictions_of({"task": int(prediction["task"])}):
                return
            self._api_once("POST", url, None, json=prediction)

        retrying(RetryPolicy.from_settings(self.settings), post, retry_if=lambda _: True)

    def _predicted(self, project: str | int, predictions: Sequence[dict]) -> set[tuple[int, str]]:
        """(task, model_version) pairs of the project's predictions among those of ``predictions``."""
        return self._predictions_of({"project": project}) & {_prediction_key(p) for p in predictions}

    def _predictions_of(self, query: dict[str, Any]) -> set[tuple[int, str]]:
        """(task, model_version) of the predictions ``GET /api/predictions/`` lists for ``query`` (task or project)."""
        listing = self.get_json("/api/predictions/", query)
        if isinstance(listing, dict):
            listing = listing.get("results") or []
        return {_prediction_key(p) for p in listing or [] if isinstance(p, dict) and "task" in p}

    def _api(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        """One API call, retried with backoff on the failures :func:`~backend.labelstudio.retry.may_retry` allows."""
        url = self._ls_url(path, LabelStudioError)
        return retrying(
            RetryPolicy.from_settings(self.settings),
            lambda: self._api_once(method, url, timeout, **kwargs),
            retry_if=lambda exc: may_retry(method, exc),
        )

    def _api_once(self, method: str, url: str, timeout: float | None, **kwargs: Any) -> Any:
        """One try (and one more after a 401 of an expired access token); transient failures are TransientError."""
        limits = httpx.Timeout(timeout or self.settings.label_studio_timeout_s, connect=CONNECT_TIMEOUT_S)
        for attempt in range(2):
            try:
                response = self._http.request(method, url, headers=self._auth_headers(), timeout=limits, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise TransientError(f"{method} {url} failed: {_describe(exc)}", status=None, sent=False) from exc
            except httpx.TransportError as exc:
                raise TransientError(f"{method} {url} failed: {_describe(exc)}", status=None, sent=True) from exc
            except httpx.HTTPError as exc:
                raise LabelStudioError(f"{method} {url} failed: {_describe(exc)}") from exc
            if response.status_code == 401 and attempt == 0 and self._uses_bearer():
                self._forget_access_token()
                continue
            break
        if response.is_error:
            message = (
                f"{method} {url} answered {response.status_code} {response.reason_phrase}"
                f"{_auth_hint(response.status_code)}: {' '.join(response.text[:300].split())}"
            )
            if response.status_code in TRANSIENT_STATUSES:
                raise TransientError(message, status=response.status_code, sent=True)
            raise LabelStudioError(message)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise LabelStudioError(f"{method} {url} did not answer JSON: {response.text[:200]!r}") from exc

    # --- images ----------------------------------------------------------------------------

    def fetch_image(self, ref: str, task_id: int | None = None) -> bytes:
        """Download (or read from the cache) the image a task refers to.

        Args:
            ref: The task's raw image value (``/data/upload/...``, ``s3://...``, an URL...).
            task_id: The task's id; required for cloud storage URIs (presign endpoint).

        Returns:
            The encoded image bytes (decode them with ``backend.vision.decode.decode_image``).

        Raises:
            ImageAccessError: the reference is refused by policy, or the download failed.
        """
        if not isinstance(ref, str) or not ref.strip():
            raise ImageAccessError(f"the task has no image reference (got {ref!r})")
        ref = ref.strip()
        key = self._cache_key(ref)
        if self._cache is not None and (cached := self._cache.get(key)) is not None:
            return cached
        data = self._download(ref, task_id)
        if self._cache is not None:
            self._cache.put(key, data)
        return data

    def _cache_key(self, ref: str) -> str:
        if ref.startswith(CLOUD_PREFIXES) or "://" in ref:
            return ref
        return f"{self.base_url or ''}{_normalize_relative(ref)}"

    def _download(self, ref: str, task_id: int | None) -> bytes:
        if ref.startswith(CLOUD_PREFIXES):
            if task_id is None:
                raise ImageAccessError(f"{ref} is a cloud storage URI: it can only be fetched with its task id")
            fileuri = base64.urlsafe_b64encode(ref.encode()).decode()
            url = self._ls_url(f"/tasks/{int(task_id)}/presign/?fileuri={fileuri}", ImageAccessError)
            return self._get(url, with_auth=True)
        scheme = urlsplit(ref).scheme.lower()
        if scheme == "file":
            return self._read_file_url(ref)
        if scheme in ("http", "https"):
            if self._is_ls_url(ref):
                return self._get(ref, with_auth=True)
            self._check_external(ref)
            return self._get(ref, with_auth=False)
        if scheme or not (ref.startswith("/") or ref.startswith("upload/")):
            raise ImageAccessError(
                f"unsupported image reference {ref[:200]!r}: expected a Label Studio path, a cloud URI or an URL"
            )
        return self._get(self._ls_url(_normalize_relative(ref), ImageAccessError), with_auth=True)

    def _get(self, url: str, *, with_auth: bool) -> bytes:
        """GET with manual redirects: auth only towards LS; hops not decided by LS are re-checked.

        A chain that did not start at Label Studio goes through the checked-address transport, every hop.
        """
        trusted = with_auth
        http = self._http if trusted else self._external
        deadline = time.monotonic() + self.settings.image_timeout_s
        for _ in range(MAX_REDIRECTS + 1):
            response_or_location = self._get_once(http, url, with_auth=with_auth, deadline=deadline)
            if isinstance(response_or_location, bytes):
                return response_or_location
            url = urljoin(url, response_or_location)
            with_auth = self._is_ls_url(url) and with_auth
            if not trusted:
                self._check_external(url)
        raise ImageAccessError(f"too many redirects fetching {_display(url)}")

    def _get_once(self, http: httpx.Client, url: str, *, with_auth: bool, deadline: float) -> bytes | str:
        """One request: the body, or the ``Location`` of a redirect."""
        limit = self.settings.image_timeout_s
        timeout = httpx.Timeout(limit, connect=min(CONNECT_TIMEOUT_S, limit))
        for attempt in range(2):
            headers = self._auth_headers(ImageAccessError) if with_auth else {}
            try:
                with http.stream("GET", url, headers=headers, timeout=timeout) as response:
                    if response.status_code == 401 and with_auth and attempt == 0 and self._uses_bearer():
                        self._forget_access_token()
                        continue
                    if response.is_redirect and "location" in response.headers:
                        return response.headers["location"]
                    if response.is_error:
                        raise ImageAccessError(
                            f"{_display(url)} answered {response.status_code} {response.reason_phrase}"
                            f"{_auth_hint(response.status_code) if with_auth else ''}"
                        )
                    return self._read_capped(response, url, deadline)
            except httpx.TimeoutException as exc:
                raise ImageAccessError(
                    f"timed out fetching {_display(url)} (IMAGE_TIMEOUT_S={self.settings.image_timeout_s})"
                ) from exc
            except httpx.HTTPError as exc:
                raise ImageAccessError(f"could not fetch {_display(url)}: {_describe(exc)}") from exc
        raise ImageAccessError(f"{_display(url)} refused the refreshed access token (401)")

    def _read_capped(self, response: httpx.Response, url: str, deadline: float) -> bytes:
        limit = self.settings.max_image_bytes
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ImageAccessError(f"{_display(url)} is {declared} bytes, over MAX_IMAGE_BYTES={limit}")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise ImageAccessError(f"{_display(url)} is over MAX_IMAGE_BYTES={limit} bytes")
            if time.monotonic() > deadline:
                raise ImageAccessError(
                    f"timed out reading {_display(url)} (IMAGE_TIMEOUT_S={self.settings.image_timeout_s})"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _read_file_url(self, ref: str) -> bytes:
        if not self.settings.allow_private_image_urls:
            raise ImageAccessError(
                f"file:// URLs are refused ({ref[:200]}); set ALLOW_PRIVATE_IMAGE_URLS=true to allow them"
            )
        path = Path(unquote(urlsplit(ref).path))
        try:
            size = path.stat().st_size
            if size > self.settings.max_image_bytes:
                raise ImageAccessError(f"{path} is {size} bytes, over MAX_IMAGE_BYTES={self.settings.max_image_bytes}")
            return path.read_bytes()
        except OSError as exc:
            raise ImageAccessError(f"cannot read {path}: {exc.strerror or exc}") from exc

    # --- URL policy ------------------------------------------------------------------------

    def _ls_url(self, path: str, error: type[Exception]) -> str:
        if not self.base_url:
            raise error(f"cannot resolve {path[:200]!r}: LABEL_STUDIO_URL is not set and /setup sent no hostname")
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def _is_ls_url(self, url: str) -> bool:
        if not self.base_url:
            return False
        ls, other = urlsplit(self.base_url), urlsplit(url)
        return (ls.scheme, _netloc(ls)) == (other.scheme.lower(), _netloc(other))

    def _check_external(self, url: str) -> None:
        """Refuse URLs outside LS unless their host is allowed and public (or private ones are allowed)."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            raise ImageAccessError(f"refused image URL {_display(url)}: only http(s) is allowed outside Label Studio")
        host = (parts.hostname or "").lower()
        allowed = {h.lower() for h in self.settings.allowed_image_hosts}
        if host not in allowed and _netloc(parts) not in allowed:
            raise ImageAccessError(
                f"refused image URL {_display(url)}: {host or 'no host'} is neither Label Studio's host "
                f"({urlsplit(self.base_url).hostname if self.base_url else 'LABEL_STUDIO_URL unset'}) "
                "nor listed in ALLOWED_IMAGE_HOSTS"
            )
        if not self.settings.allow_private_image_urls and _resolves_to_private(host):
            raise ImageAccessError(
                f"refused image URL {_display(url)}: {host} resolves to a private or loopback address "
                "(set ALLOW_PRIVATE_IMAGE_URLS=true to allow)"
            )

    # --- auth ------------------------------------------------------------------------------

    def _uses_bearer(self) -> bool:
        return self._api_key is not None and _jwt_claims(self._api_key) is not None

    def _auth_headers(self, error: type[Exception] = LabelStudioError) -> dict[str, str]:
        if self._api_key:
            if self._uses_bearer():
                try:
                    return {"Authorization": f"Bearer {self._current_access_token()}"}
                except LabelStudioError as exc:
                    if error is LabelStudioError:
                        raise
                    raise error(str(exc)) from exc
            return {"Authorization": f"Token {self._api_key}"}
        if self._fallback_token:
            return {"Authorization": f"Token {self._fallback_token}"}
        return {}

    def _forget_access_token(self) -> None:
        with self._lock:
            self._access_token = None
            self._access_expires_at = 0.0

    def _current_access_token(self) -> str:
        """The cached access token, exchanged again from the PAT when it is about to expire."""
        with self._lock:
            now = time.time()
            if self._access_token and self._access_expires_at - TOKEN_REFRESH_MARGIN_S > now:
                return self._access_token
            claims = _jwt_claims(self._api_key or "") or {}
            expiry = claims.get("exp")
            if isinstance(expiry, int | float) and expiry < now:
                raise LabelStudioError(
                    "LABEL_STUDIO_API_KEY is a personal access token that has expired; create a new one in "
                    "Label Studio (Account & Settings > Personal Access Token)"
                )
            self._access_token, self._access_expires_at = self._refresh(now)
            return self._access_token

    def _refresh(self, now: float) -> tuple[str, float]:
        url = self._ls_url(TOKEN_REFRESH_PATH, LabelStudioError)
        timeout = httpx.Timeout(self.settings.label_studio_timeout_s, connect=CONNECT_TIMEOUT_S)
        try:
            response = self._http.post(url, json={"refresh": self._api_key}, timeout=timeout)
        except httpx.HTTPError as exc:
            raise LabelStudioError(f"exchanging the personal access token at {url} failed: {_describe(exc)}") from exc
        if response.is_error:
            raise LabelStudioError(
                f"Label Studio refused the personal access token in LABEL_STUDIO_API_KEY at {url} "
                f"({response.status_code} {response.reason_phrase}): check that the token is current"
            )
        try:
            access = response.json()["access"]
        except (ValueError, KeyError, TypeError) as exc:
            raise LabelStudioError(f"{url} answered without an access token: {response.text[:200]!r}") from exc
        expiry = (_jwt_claims(access) or {}).get("exp")
        expires_at = float(expiry) if isinstance(expiry, int | float) else now + DEFAULT_ACCESS_LIFETIME_S
        logger.info("exchanged the personal access token for an access token valid %.0f s", expires_at - now)
        return access, expires_at


def _prediction_key(prediction: dict) -> tuple[int, str]:
    return int(prediction["task"]), str(prediction.get("model_version"))


def _normalize_relative(ref: str) -> str:
    """``upload/x`` and ``/upload/x`` -> ``/data/upload/x``; other paths unchanged (with a leading slash)."""
    if ref.startswith("upload/"):
        return f"/data/{ref}"
    if ref.startswith("/upload/"):
        return f"/data{ref}"
    return ref if ref.startswith("/") else f"/{ref}"


def _netloc(parts: SplitResult) -> str:
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    try:
        port = parts.port or default
    except ValueError as exc:
        raise ImageAccessError(f"invalid port in image URL {parts.geturl()[:200]!r}") from exc
    return f"{(parts.hostname or '').lower()}:{port}"


def _resolves_to_private(host: str) -> bool:
    """True if ``host`` is, or resolves to, any non-public address (loopback, private, link-local...).

    An early check for a clear refusal; the connect itself is checked again, on the address it uses
    (``checked_connect``), so an answer that changes in between cannot reach a private address.
    """
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        pass
    return bool(non_public(resolve(host)))


def _jwt_claims(token: str) -> dict | None:
    """The payload of a JWT carrying an ``exp`` claim (a personal access token), else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return payload if isinstance(payload, dict) and "exp" in payload else None


def _display(url: str) -> str:
    """The URL without its query string when it may carry a signature (not Label Studio's own paths)."""
    parts = urlsplit(url)
    if parts.query and ("presign" in parts.path or "signature" in parts.query.lower() or "sig=" in parts.query):
        return f"{parts.scheme}://{parts.netloc}{parts.path}?..."
    return url[:300]


def _describe(exc: httpx.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _auth_hint(status: int) -> str:
    if status in (401, 403):
        return (
            " (check LABEL_STUDIO_API_KEY: a personal access token, or a legacy token if legacy tokens are "
            "enabled in Label Studio)"
        )
    return ""
