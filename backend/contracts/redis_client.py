"""The one place Redis clients are built, each with a named timeout profile.

Every process (backend, worker, CLI) talks to the same Redis, but not with the same patience: a web
request must never wait on a Redis outage, a worker blocks on its queue for minutes on purpose.

Usage::

    connection = connect(settings.effective_redis_url, REQUEST)
"""

from __future__ import annotations

from dataclasses import dataclass

import redis


@dataclass(frozen=True)
class RedisProfile:
    """Timeouts of one kind of Redis use, in seconds (None: wait as long as it takes)."""

    name: str
    connect_timeout_s: float
    socket_timeout_s: float | None
    keepalive: bool = False
    health_check_interval_s: int = 0


#: The request path of the web service (/setup, /webhook, /predict): an outage must not stall an answer.
REQUEST = RedisProfile("request", connect_timeout_s=0.1, socket_timeout_s=0.5)
#: "Is anything listening there?" checks at start-up.
PROBE = RedisProfile("probe", connect_timeout_s=0.3, socket_timeout_s=0.5)
#: The models-channel subscriber of each backend process: waits on the channel, pings every 30 s.
SUBSCRIBER = RedisProfile(
    "subscriber", connect_timeout_s=0.5, socket_timeout_s=None, keepalive=True, health_check_interval_s=30
)
#: Command-line tools and jobs outside a worker: patient, but never forever.
TOOL = RedisProfile("tool", connect_timeout_s=2.0, socket_timeout_s=5.0)
#: The RQ worker: its dequeue blocks on the queue for minutes, so reads have no timeout.
WORKER = RedisProfile(
    "worker", connect_timeout_s=5.0, socket_timeout_s=None, keepalive=True, health_check_interval_s=30
)


def connect(url: str, profile: RedisProfile) -> redis.Redis:
    """A client for ``url`` with ``profile``'s timeouts (no connection is made until the first command)."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=profile.connect_timeout_s,
        socket_timeout=profile.socket_timeout_s,
        socket_keepalive=profile.keepalive,
        health_check_interval=profile.health_check_interval_s,
    )


def answers(url: str) -> bool:
    """True if a Redis answers ``PING`` at ``url`` within the :data:`PROBE` timeouts."""
    client = connect(url, PROBE)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
