"""Write a bundle atomically, and let the gate decide whether it is served.

Order of operations, each step safe to crash in:

1. every file is written into ``models/<project>/.tmp-<job id>/`` (ignored by every reader);
2. ``backend.contracts.bundle.commit_bundle`` renames it into place in one ``os.rename``;
3. only then, and only if the gate promoted it, ``backend.contracts.promotion.set_current`` replaces the pointer
   and announces the version on the models channel (every backend process swaps), and job
   ``relabel-<project>`` is enqueued (``RELABEL_ON_PROMOTION``) to re-label the unannotated tasks.

A failure in 1 or 2 removes the staging directory and leaves the pointer alone; a crash that skips
that clean-up leaves a ``.tmp-*`` directory nobody reads, replaced by the next run of the job. A write
that fails (a full disk above all) is raised as :class:`~trainer.errors.BundleWriteError`, one sentence
naming the directory, the free space and the version still served, which the job records as its error.

The gate's verdict (``trainer.gate``) is already in the manifest's ``status``. A refused model is still
written, as a ``rejected`` bundle carrying the reason, so ``GET /models`` shows what was tried and a
person can promote it by hand.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import redis
import torch
from safetensors.torch import save

from backend.config import get_settings
from backend.contracts import promotion
from backend.contracts.bundle import (
    CARD_FILE,
    CONFUSION_MATRIX_FILE,
    METRICS_FILE,
    SPLIT_FILE,
    TENSORBOARD_DIR,
    WEIGHTS_FILE,
    BundleManifest,
    BundleStatus,
    commit_bundle,
    project_dir,
    staging_dir,
    write_manifest,
)
from backend.contracts.keys import RedisKeys
from backend.contracts.label_jobs import enqueue_relabel
from backend.contracts.registry import NO_CLASSIFIER, read_current
from trainer.errors import BundleWriteError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleFiles:
    """Everything besides the manifest that goes into a bundle."""

    state_dict: dict[str, torch.Tensor]
    metrics: dict
    card: str
    confusion_png: Path | None = None
    tensorboard_dir: Path | None = None
    split: dict | None = None
    """The content of ``split.json`` (``trainer.split.SplitResult.record``)."""


def publish(
    models_dir: Path,
    manifest: BundleManifest,
    files: BundleFiles,
    *,
    connection: redis.Redis | None,
    keys: RedisKeys,
) -> Path:
    """Write the bundle atomically; if its status is ``promoted``, point the project at it and announce it.

    Returns:
        The committed bundle directory.

    Raises:
        BundleError: the bundle could not be committed (nothing is left behind, the pointer is unchanged).
        BundleWriteError: a file could not be written, a full disk above all (same guarantee); or the bundle
            was committed but the pointer could not be moved to it (it stays unserved, listed as promoted).
    """
    staging: Path | None = None
    try:
        staging = staging_dir(models_dir, manifest.project, manifest.job_id or manifest.version)
        _write_files(staging, files)
        write_manifest(staging, manifest)
        final = commit_bundle(staging, models_dir, manifest)
    except OSError as exc:
        _discard(staging)
        raise _write_error(exc, models_dir, manifest, pointer=False) from exc
    except BaseException:
        _discard(staging)
        raise
    logger.info("bundle %s written (%s: %s)", manifest.version, manifest.status.value, manifest.status_reason)
    if manifest.status == BundleStatus.PROMOTED:
        try:
            promotion.set_current(models_dir, manifest.project, manifest.version, connection, keys)
        except OSError as exc:
            raise _write_error(exc, models_dir, manifest, pointer=True) from exc
        if connection is not None:
            _relabel(connection, manifest.project, manifest.version)
    return final


def _discard(staging: Path | None) -> None:
    """Remove a staging directory (deleting needs no free space, so this works on a full disk too)."""
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)


def _write_error(exc: OSError, models_dir: Path, manifest: BundleManifest, *, pointer: bool) -> BundleWriteError:
    """One sentence for the job's error: what failed, where, how much space is left, what is still served."""
    directory = project_dir(models_dir, manifest.project)
    try:
        free = f"{shutil.disk_usage(directory if directory.exists() else models_dir).free / 1e6:.1f} MB free"
    except OSError:
        free = "free space unknown"
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    cause = f"disk full ({exc.strerror}, {free})" if full else f"{exc.strerror or exc} ({free})"
    served = read_current(models_dir, manifest.project) or NO_CLASSIFIER
    if pointer:
        what = f"was written to {directory}, but the pointer could not be moved to it"
        fix = f"; promote it with POST /models/{manifest.version}/promote once there is space"
    else:
        what = f"could not be written to {directory}"
        fix = "; free space there and train again" if full else ""
    error = BundleWriteError(
        f"bundle {manifest.version} {what}: {cause}; project {manifest.project} still serves {served}{fix}"
    )
    error.errno = exc.errno
    return error


def _relabel(connection: redis.Redis, project: str, version: str) -> None:
    """Enqueue ``relabel-<project>`` for the newly served version (``RELABEL_ON_PROMOTION``)."""
    settings = get_settings()
    if not settings.relabel_on_promotion:
        return
    try:
        enqueue_relabel(connection, settings, project, trigger=f"gate promoted {version}")
    except redis.RedisError as exc:
        logger.warning("project %s: re-label after promoting %s not enqueued: %s", project, version, exc)


def _write_files(directory: Path, files: BundleFiles) -> None:
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in files.state_dict.items()}
    # serialised in memory and written by Python, so a failed write is an OSError with its errno (a full disk
    # is ENOSPC), not safetensors' own error type
    (directory / WEIGHTS_FILE).write_bytes(save(tensors))
    (directory / METRICS_FILE).write_text(json.dumps(files.metrics, indent=2, sort_keys=True) + "\n")
    (directory / CARD_FILE).write_text(files.card)
    if files.split is not None:
        (directory / SPLIT_FILE).write_text(json.dumps(files.split, indent=1, sort_keys=True) + "\n")
    if files.confusion_png is not None and files.confusion_png.is_file():
        shutil.copyfile(files.confusion_png, directory / CONFUSION_MATRIX_FILE)
    if files.tensorboard_dir is not None and files.tensorboard_dir.is_dir():
        shutil.copytree(files.tensorboard_dir, directory / TENSORBOARD_DIR)
