"""Every Redis key and channel this project uses, built in one place (see docs/contracts.md)."""

from __future__ import annotations

from dataclasses import dataclass

#: RQ queue names.
TRAINING_QUEUE = "training"
PRELABEL_QUEUE = "prelabel"


@dataclass(frozen=True)
class RedisKeys:
    """Key names under one prefix (``REDIS_PREFIX``, default ``camtrap:``)."""

    prefix: str = "camtrap:"

    def current(self, project: str) -> str:
        """String: the promoted classifier version (mirror of ``current.json``; the file wins)."""
        return f"{self.prefix}project:{project}:current"

    def pending(self, project: str) -> str:
        """Integer: annotations created/updated since the last training job was enqueued."""
        return f"{self.prefix}project:{project}:pending"

    def setup(self, project: str) -> str:
        """Hash: last label config (``schema``) and ``extra_params`` seen for the project."""
        return f"{self.prefix}project:{project}:setup"

    @property
    def models_channel(self) -> str:
        """Pub/sub channel: ``{"project": ..., "version": ...}`` on every promotion or rollback."""
        return f"{self.prefix}models"


def training_job_id(project: str) -> str:
    """RQ job id of a project's training job: at most one is queued or running per project."""
    return f"train-{project}"


def relabel_job_id(project: str) -> str:
    """RQ job id of a project's re-label job (after a promotion): a newer promotion replaces it."""
    return f"relabel-{project}"
