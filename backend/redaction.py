"""Credentials never reach a log line or an error body.

:func:`redact` masks them; :func:`install` applies it to every log record.

What is masked (each replaced by ``***``):

- the secrets this process knows: ``LABEL_STUDIO_API_KEY``, ``BASIC_AUTH_PASS``, ``WEBHOOK_SECRET`` and
  every ``access_token`` a ``/setup`` sent (:func:`register`);
- ``Authorization``-style values (``Token …``, ``Bearer …``, ``Basic …``) and JWTs (Label Studio PATs);
- the password of ``user:password@`` in URLs;
- presigned-URL signatures and credentials (S3 ``X-Amz-Signature``/``X-Amz-Credential``/
  ``X-Amz-Security-Token``, GCS ``X-Goog-Signature``/``X-Goog-Credential``, Azure SAS ``sig``, generic
  ``signature``/``token``/``access_token``/``secret``/``password`` query parameters).

:func:`install` wraps the log record factory, so it covers every logger and handler of the process
(uvicorn's included), tracebacks too.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Iterable

MASK = "***"
#: Shorter values are not registered (masking "a" everywhere would make logs unreadable).
MIN_SECRET_LENGTH = 6

_QUERY_KEYS = (
    r"x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential|sig|signature"
    r"|token|access_token|refresh|refresh_token|secret|password|api_key|apikey"
)
# Every repetition is bounded, so that no log line costs more than linear time (logged input is hostile).
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"(?i)([?&;](?:{_QUERY_KEYS})=)[^&#\s'\"]{{1,4096}}"), rf"\g<1>{MASK}"),
    # a credential after Token/Bearer/Basic has a digit in it ("basic authentication" is prose)
    (
        re.compile(r"(?i)\b(token|bearer|basic)(\s{1,8})(?=[A-Za-z0-9._~+/=-]{0,4096}?\d)[A-Za-z0-9._~+/=-]{8,4096}"),
        rf"\1\2{MASK}",
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{1,4096}\.[A-Za-z0-9_-]{1,4096}\.[A-Za-z0-9_-]{1,4096}"), MASK),
    (re.compile(r"(?i)(://[^/\s:@]{1,256}:)[^@\s/]{1,256}@"), rf"\g<1>{MASK}@"),
)

_lock = threading.Lock()
_secrets: set[str] = set()
_installed = False


def register(*secrets: str | None) -> None:
    """Remember values that must never be shown (None and short values are ignored)."""
    with _lock:
        _secrets.update(s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH)


def known_secrets() -> Iterable[str]:
    with _lock:
        return sorted(_secrets, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every credential masked."""
    for secret in known_secrets():
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def install(*secrets: str | None) -> None:
    """Register ``secrets`` and make every log record of this process pass through :func:`redact` (idempotent)."""
    global _installed
    register(*secrets)
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it for the handler to report
            return record
        _redact_record(record, message)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    logging.setLogRecordFactory(factory)


def _redact_record(record: logging.LogRecord, message: str) -> None:
    """Mask ``record``'s message, keeping its ``args`` tuple when masking each argument is enough.

    Formatters may read the arguments themselves: uvicorn's access formatter unpacks its five, and
    failed with a traceback on every request once they were replaced by None. They are flattened into
    the message only when the masked arguments still leave a credential in it (one split over two).
    """
    if isinstance(record.args, tuple) and record.args:
        msg = redact(record.msg) if isinstance(record.msg, str) else record.msg
        args = tuple(_redact_arg(arg) for arg in record.args)
        try:
            masked = msg % args if isinstance(msg, str) else None
        except (TypeError, ValueError):
            masked = None
        if masked is not None and redact(masked) == masked:
            record.msg, record.args = msg, args
            return
    record.msg, record.args = redact(message), None


def _redact_arg(value: object) -> object:
    """A string argument masked; another kind kept as it is unless its text holds a credential."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    masked = redact(text)
    return value if masked == text else masked
