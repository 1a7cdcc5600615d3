"""The hot-swap watcher: a thread that tells the runtime when a project's model pointer may have moved.

:class:`ModelWatcher` listens on the Redis models channel and, every ``MODEL_POLL_INTERVAL_S``, asks
for every loaded project to be refreshed anyway, so a promotion is picked up even while Redis is down
(it resubscribes once per interval). It never loads anything itself: it calls the ``refresh`` it was
given (``ClassifierSlots.refresh``) on its own thread, never on the event loop, and a failed refresh is logged
without stopping the thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import redis
from redis.client import PubSub

from backend.config import Settings
from backend.contracts.keys import RedisKeys
from backend.contracts.redis_client import SUBSCRIBER, connect

logger = logging.getLogger(__name__)


class ModelWatcher:
    """Refreshes loaded projects on model announcements and on a timer, from a daemon thread.

    Args:
        settings: The process settings (``effective_redis_url``, ``model_poll_interval_s``).
        keys: Redis key names (the models channel).
        refresh: Re-reads one project's pointer and swaps its classifier if it changed.
        projects: The projects loaded in this process; only these are refreshed.
    """

    def __init__(
        self,
        settings: Settings,
        keys: RedisKeys,
        refresh: Callable[[str], object],
        projects: Callable[[], list[str]],
    ) -> None:
        self.settings = settings
        self.keys = keys
        self._refresh = refresh
        self._projects = projects
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the watcher thread (does nothing if it is already running)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout_s`` seconds for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _watch(self) -> None:
        interval = self.settings.model_poll_interval_s
        next_poll = time.monotonic() + interval
        pubsub: PubSub | None = None
        retry_at = 0.0
        while not self._stop.is_set():
            if pubsub is None and time.monotonic() >= retry_at:
                pubsub = self._subscribe()
                retry_at = time.monotonic() + interval
            wait = min(max(0.05, next_poll - time.monotonic()), 1.0)
            if pubsub is not None:
                try:
                    message = pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                except (redis.RedisError, OSError) as exc:
                    logger.warning("lost the models channel (%s); polling model pointers instead", exc)
                    _close_quietly(pubsub)
                    pubsub = None
                    message = None
                if message is not None:
                    self._on_announcement(message.get("data"))
            else:
                self._stop.wait(wait)
            if time.monotonic() >= next_poll:
                self._poll_pointers()
                next_poll = time.monotonic() + interval
        if pubsub is not None:
            _close_quietly(pubsub)

    def _subscribe(self) -> PubSub | None:
        try:
            client = connect(self.settings.effective_redis_url, SUBSCRIBER)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(self.keys.models_channel)
            return pubsub
        except (redis.RedisError, OSError) as exc:
            logger.warning("cannot subscribe to %s (%s); polling model pointers", self.keys.models_channel, exc)
            return None

    def _on_announcement(self, data: object) -> None:
        try:
            project = str(json.loads(data)["project"])  # type: ignore[arg-type]
        except (TypeError, ValueError, KeyError) as exc:
            logger.warning("ignoring malformed model announcement %r: %s", data, exc)
            return
        if project in self._projects():
            self._safe_refresh(project)

    def _poll_pointers(self) -> None:
        for project in self._projects():
            self._safe_refresh(project)

    def _safe_refresh(self, project: str) -> None:
        try:
            self._refresh(project)
        except Exception:
            logger.exception("refreshing the classifier of project %s failed", project)


def _close_quietly(pubsub: PubSub) -> None:
    try:
        pubsub.close()
    except (redis.RedisError, OSError):
        pass
