"""Per-project set-up: what Label Studio's ``/setup`` last sent, and the thresholds it implies.

:class:`ProjectSetups` keeps each project's :class:`ProjectSetup` in memory and (best effort) in the
Redis set-up hash, so another process that never saw ``/setup`` can read it back. The access token
stays in memory only. ``extra_params`` may override the environment's thresholds per project.

All methods are blocking (they may talk to Redis); routes call them through a thread pool.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import redis

from backend.config import Settings
from backend.redis_keys import RedisKeys
from backend.results import Thresholds

logger = logging.getLogger(__name__)

#: ``extra_params`` keys that override a threshold for one project.
THRESHOLD_KEYS = ("detection_threshold", "classify_threshold", "show_threshold", "species_threshold")


@dataclass(frozen=True)
class ProjectSetup:
    """What ``/setup`` last told us about a project."""

    schema: str | None = None
    extra_params: dict = field(default_factory=dict)
    hostname: str | None = None
    access_token: str | None = None


class ProjectSetups:
    """The set-ups of the projects this process has been told about, backed by the Redis set-up hash.

    Args:
        settings: The process settings (the default thresholds).
        redis_client: Short-timeout client used for the set-up hash (None: memory only).
        keys: Redis key names (the set-up hash of a project).
    """

    def __init__(self, settings: Settings, redis_client: redis.Redis | None, keys: RedisKeys) -> None:
        self.settings = settings
        self.redis = redis_client
        self.keys = keys
        self._setups: dict[str, ProjectSetup] = {}

    def remember(
        self, project: str, schema: str | None, extra_params: dict, hostname: str | None, access_token: str | None
    ) -> ProjectSetup:
        """Keep what /setup sent, in memory and (best effort) in the Redis set-up hash."""
        setup = ProjectSetup(schema, extra_params, hostname, access_token)
        self._setups[project] = setup
        if self.redis is not None:
            try:
                self.redis.hset(
                    self.keys.setup(project),
                    mapping={
                        "schema": schema or "",
                        "extra_params": json.dumps(extra_params),
                        "hostname": hostname or "",
                    },
                )
            except redis.RedisError as exc:
                logger.warning("could not store the set-up of project %s in Redis: %s", project, exc)
        return setup

    def get(self, project: str | None) -> ProjectSetup:
        """The project's last set-up: from memory, else from the Redis hash (another process saw /setup)."""
        if project is None:
            return ProjectSetup()
        setup = self._setups.get(project)
        if setup is not None or self.redis is None:
            return setup or ProjectSetup()
        try:
            stored = self.redis.hgetall(self.keys.setup(project))
        except redis.RedisError as exc:
            logger.warning("could not read the set-up of project %s from Redis: %s", project, exc)
            return ProjectSetup()
        decoded = {k.decode(): v.decode() for k, v in stored.items()}
        setup = ProjectSetup(
            decoded.get("schema") or None,
            parse_extra_params(decoded.get("extra_params")),
            decoded.get("hostname") or None,
        )
        self._setups[project] = setup
        return setup

    def thresholds(self, project: str | None) -> Thresholds:
        """Thresholds of a project: ``extra_params`` win over the environment."""
        s = self.settings
        values = {
            "detection": s.detection_threshold,
            "classify": s.classify_threshold,
            "show": s.show_threshold,
            "species": s.species_threshold,
        }
        extra = self.get(project).extra_params
        for key in THRESHOLD_KEYS:
            if key in extra:
                try:
                    value = float(extra[key])
                except (TypeError, ValueError):
                    value = -1.0
                if 0.0 <= value <= 1.0:
                    values[key.removesuffix("_threshold")] = value
                else:
                    logger.warning("project %s: ignoring extra_params %s=%r (need 0..1)", project, key, extra[key])
        return Thresholds(**values)


def parse_extra_params(value: object) -> dict:
    """``extra_params`` as sent by Label Studio (a dict, a JSON string, ``k=v`` lines, or null) -> a dict."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            pairs = [p.split("=", 1) for p in value.replace(",", "\n").splitlines() if "=" in p]
            return {k.strip(): v.strip() for k, v in pairs}
        return parsed if isinstance(parsed, dict) else {}
    return {}
