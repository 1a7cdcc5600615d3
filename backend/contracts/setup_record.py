"""The per-project set-up record: what Label Studio last told us about a project.

One typed class, :class:`SetupRecord`, reads and writes the Redis hash ``<prefix>project:<id>:setup``
(see ``docs/contracts.md``) for every process: the backend writes it on ``/setup`` and on the
``PROJECT_UPDATED`` webhook, every backend process and every worker reads it. Fields:

============  =====================================================================================
field         meaning
============  =====================================================================================
schema        the labeling config XML (``schema`` in ``/setup``, ``label_config`` in webhooks)
extra_params  the model's *Extra params* in Label Studio, as a JSON object
hostname      Label Studio's own URL as it sent it (used when ``LABEL_STUDIO_URL`` is unset)
============  =====================================================================================

The ``access_token`` Label Studio sends in ``/setup`` is a credential: it is never stored here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from backend.contracts.keys import RedisKeys

logger = logging.getLogger(__name__)

#: Key of the per-project auto-training interval in ``extra_params``.
TRAIN_EVERY_PARAM = "train_every_n_annotations"


@dataclass(frozen=True)
class SetupRecord:
    """One project's stored set-up (all fields optional)."""

    schema: str | None = None
    extra_params: dict[str, Any] = field(default_factory=dict)
    hostname: str | None = None

    @classmethod
    def load(cls, connection: redis.Redis, keys: RedisKeys, project: str) -> SetupRecord | None:
        """The stored record, or None when the project has none.

        Raises:
            redis.RedisError: Redis is unavailable.
        """
        stored = connection.hgetall(keys.setup(project))
        if not stored:
            return None
        decoded = {_text(k): _text(v) for k, v in stored.items()}
        return cls(
            schema=decoded.get("schema") or None,
            extra_params=parse_extra_params(decoded.get("extra_params")),
            hostname=decoded.get("hostname") or None,
        )

    def save(self, connection: redis.Redis, keys: RedisKeys, project: str) -> None:
        """Write every field of the record.

        Raises:
            redis.RedisError: Redis is unavailable.
        """
        connection.hset(keys.setup(project), mapping=self._fields())

    @staticmethod
    def save_schema(connection: redis.Redis, keys: RedisKeys, project: str, schema: str) -> None:
        """Replace only the labeling config (``PROJECT_UPDATED`` carries nothing else).

        Raises:
            redis.RedisError: Redis is unavailable.
        """
        connection.hset(keys.setup(project), "schema", schema)

    def with_schema(self, schema: str | None) -> SetupRecord:
        return replace(self, schema=schema)

    def train_every(self, default: int) -> int:
        """The project's auto-training interval (``train_every_n_annotations``), else ``default``; 0 = off."""
        value = self.extra_params.get(TRAIN_EVERY_PARAM, default)
        try:
            return max(0, int(value))
        except (TypeError, ValueError):
            logger.warning("ignoring a bad %s in extra_params: %r", TRAIN_EVERY_PARAM, value)
            return default

    def _fields(self) -> dict[str | bytes, str]:
        return {
            "schema": self.schema or "",
            "extra_params": json.dumps(self.extra_params),
            "hostname": self.hostname or "",
        }


def parse_extra_params(value: object) -> dict[str, Any]:
    """``extra_params`` as Label Studio sends it (a dict, a JSON string, ``k=v`` lines, or null) -> a dict."""
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
