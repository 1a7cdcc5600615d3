"""This process's view of each project's set-up: the stored record, plus the token ``/setup`` sent.

:class:`ProjectSetups` keeps each project's :class:`~backend.contracts.setup_record.SetupRecord` in
memory and writes it (best effort) to Redis, so a process that never saw ``/setup`` reads it back.
A remembered record is re-read from Redis once it is older than ``SETUP_REFRESH_S``, so a ``/setup``
with new ``extra_params`` received by one uvicorn worker takes effect in every worker within that
time; while Redis is down the last record read stays in use.
The ``access_token`` of ``/setup`` is a credential and stays in this process's memory only.

All methods are blocking (they may talk to Redis); routes call them through a thread pool.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis

from backend import redaction
from backend.config import Settings
from backend.contracts.keys import RedisKeys
from backend.contracts.setup_record import SetupRecord
from backend.vision.thresholds import Thresholds

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectSetup:
    """What this process knows of a project: its stored record and, if it saw ``/setup``, the token."""

    record: SetupRecord = SetupRecord()
    access_token: str | None = None

    @property
    def schema(self) -> str | None:
        return self.record.schema

    @property
    def hostname(self) -> str | None:
        return self.record.hostname

    @property
    def extra_params(self) -> dict:
        return self.record.extra_params


class ProjectSetups:
    """The set-ups of the projects this process has been told about, backed by the Redis set-up record.

    Args:
        settings: The process settings (the default thresholds).
        redis_client: Short-timeout client (None: memory only).
        keys: Redis key names.
    """

    def __init__(self, settings: Settings, redis_client: redis.Redis | None, keys: RedisKeys) -> None:
        self.settings = settings
        self.redis = redis_client
        self.keys = keys
        self._defaults = Thresholds.from_settings(settings)
        self._setups: dict[str, ProjectSetup] = {}
        self._read_at: dict[str, float] = {}  # monotonic time each project's record was last current

    def remember(self, project: str, record: SetupRecord, access_token: str | None) -> ProjectSetup:
        """Keep what /setup sent, in memory and (best effort) in the Redis set-up record."""
        redaction.register(access_token)
        setup = ProjectSetup(record, access_token)
        self._setups[project] = setup
        self._read_at[project] = time.monotonic()
        if self.redis is not None:
            try:
                record.save(self.redis, self.keys, project)
            except redis.RedisError as exc:
                logger.warning("could not store the set-up of project %s in Redis: %s", project, exc)
        return setup

    def get(self, project: str | None) -> ProjectSetup:
        """The project's last set-up: from memory while fresh, else from Redis (another process saw /setup)."""
        if project is None:
            return ProjectSetup()
        setup = self._setups.get(project)
        if self.redis is None:
            return setup or ProjectSetup()
        now = time.monotonic()
        if setup is not None and now - self._read_at.get(project, 0.0) < self.settings.setup_refresh_s:
            return setup
        try:
            record = SetupRecord.load(self.redis, self.keys, project)
        except redis.RedisError as exc:
            logger.warning("could not read the set-up of project %s from Redis: %s", project, exc)
            return setup or ProjectSetup()
        if record is None and setup is not None:
            record = setup.record  # Redis lost it (restarted without persistence): keep what we saw
        token = setup.access_token if setup is not None else None
        fresh = ProjectSetup(record or SetupRecord(), token)
        self._setups[project] = fresh
        self._read_at[project] = now
        return fresh

    def thresholds(self, project: str | None) -> Thresholds:
        """Thresholds of a project: ``extra_params`` win over the environment."""
        extra = self.get(project).extra_params
        return self._defaults.with_overrides(extra, context=f"project {project}: ") if extra else self._defaults
