"""Bounded retries with exponential backoff for Label Studio API calls, and which failures they may cure.

Label Studio restarts, sits behind proxies that answer 502/503/504 while it does, and times out under a
large export: a job that gives up at the first such answer loses minutes of work for a blip. But a retry
is only harmless when the call is idempotent or surely was not applied:

==============================================  ==========================================================
failure (a :class:`TransientError`)             retried for
==============================================  ==========================================================
connection refused / connect timeout            every call (nothing reached Label Studio)
502, 503                                        every call (the proxy did not pass it on / LS refused it)
500, 504, read timeout, dropped connection      GETs only (idempotent): a POST may have been applied
==============================================  ==========================================================

504 is left out for plain POSTs on purpose: a gateway timeout means the proxy passed the request on and
Label Studio may have done it (a task import resent would import the tasks twice). Prediction pushes
retry on every row, but re-read what arrived first (``LabelStudioClient.import_predictions``,
``create_prediction``). Anything else (4xx, a body that is not JSON) fails at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from backend.config import Settings
from backend.errors import LabelStudioError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Statuses a later try may not see (Label Studio restarting, or the proxy in front of it).
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
#: Of those, the ones after which a plain POST is resent: the request was not carried out.
GATEWAY_STATUSES = frozenset({502, 503})


class TransientError(LabelStudioError):
    """A failure a later try may not see.

    Args:
        message: One sentence naming the call and what went wrong.
        status: The HTTP status, or None for a timeout or a connection error.
        sent: False when the request surely never reached Label Studio (connection refused).
    """

    def __init__(self, message: str, *, status: int | None, sent: bool) -> None:
        super().__init__(message)
        self.status = status
        self.sent = sent


def may_retry(method: str, error: TransientError) -> bool:
    """Whether ``error`` of a plain ``method`` call may be retried by resending it (see the module table)."""
    return method == "GET" or not error.sent or error.status in GATEWAY_STATUSES


@dataclass(frozen=True)
class RetryPolicy:
    """How many retries, and the wait before the first (doubled before each next one), in seconds."""

    retries: int
    backoff_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.label_studio_retries, settings.label_studio_retry_backoff_s)

    @property
    def tries(self) -> int:
        return self.retries + 1

    def delays(self) -> Iterator[float]:
        return (self.backoff_s * 2**i for i in range(self.retries))


def retrying(policy: RetryPolicy, call: Callable[[], T], *, retry_if: Callable[[TransientError], bool]) -> T:
    """``call()``, again after a backoff while it raises a :class:`TransientError` that ``retry_if`` accepts.

    Raises:
        LabelStudioError: the last failure, saying how many tries were made when there was more than one.
    """
    delays = policy.delays()
    tries = 0
    while True:
        tries += 1
        try:
            return call()
        except TransientError as exc:
            delay = next(delays, None) if retry_if(exc) else None
            if delay is None:
                if tries == 1:
                    raise
                raise LabelStudioError(f"{exc} (gave up after {tries} tries)") from exc
            logger.warning("%s (try %d of %d); retrying in %.1f s", exc, tries, policy.tries, delay)
            time.sleep(delay)
