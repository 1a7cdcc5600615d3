"""Trained classifiers: ``GET /models``, ``POST /models/{version}/promote``, ``GET /versions``.

Promotion by hand (rollback or roll forward) goes through ``backend.contracts.promotion.set_current``, exactly
as the trainer's gate does: pointer file, Redis mirror, announcement, and every backend swaps.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from fastapi.concurrency import run_in_threadpool

from backend.contracts import promotion, registry
from backend.contracts.bundle import VERSION_PATTERN, BundleManifest, bundle_dir, list_bundles, read_metrics
from backend.contracts.keys import RedisKeys
from backend.contracts.label_jobs import enqueue_relabel
from backend.contracts.projects import project_id
from backend.service.deps import RedisDep, SettingsDep, require_ls_auth
from backend.service.http_errors import error_responses
from backend.service.schemas import ModelsResponse, ProjectQuery, PromoteResponse, VersionsResponse

logger = logging.getLogger(__name__)

router = APIRouter(tags=["models"], dependencies=[Depends(require_ls_auth)], responses=error_responses(401, 422))

#: The gate's figures ``GET /models`` shows next to the reason (from ``metrics.json``).
GATE_FIELDS = ("against", "comparable", "species", "crops", "gain", "interval", "confidence", "min_gain")

Version = Annotated[
    str, Path(pattern=VERSION_PATTERN.pattern, description="a bundle version, or `none` (the detector alone)")
]


@router.get("/models", response_model=ModelsResponse)
async def read_models(settings: SettingsDep, project: ProjectQuery = None) -> dict[str, Any]:
    """Bundles of a project (or of every project), newest first: metrics, which is current, why rejected."""
    projects = [_project(project)] if project is not None else registry.projects(settings.models_dir)
    detector = registry.detector_id(settings.detector_model)
    listing = await run_in_threadpool(lambda: {p: _describe(settings.models_dir, p, detector) for p in projects})
    return {"projects": listing}


@router.post("/models/{version}/promote", response_model=PromoteResponse, responses=error_responses(404, 409))
async def promote_model(
    version: Version, settings: SettingsDep, connection: RedisDep, project: ProjectQuery = None
) -> dict[str, Any]:
    """Serve ``version`` (rollback or roll forward): move the pointer and announce it to every backend.

    ``none`` (with ``?project=``; 422 without) rolls back to the detector alone. Without ``?project=``
    the version's project is looked up: 404 when no project has it, 409 when several do.
    """
    if version == registry.NO_CLASSIFIER and project is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "rolling back to 'none' needs ?project=<id>")
    owner = _project(project) if project is not None else _owner(settings.models_dir, version)
    previous = registry.read_current(settings.models_dir, owner)
    await run_in_threadpool(
        promotion.set_current, settings.models_dir, owner, version, connection, RedisKeys(settings.redis_prefix)
    )
    logger.info("project %s: %s promoted by hand (was %s)", owner, version, previous)
    if settings.relabel_on_promotion and version != previous:
        await run_in_threadpool(enqueue_relabel, connection, settings, owner, trigger=f"{version} promoted by hand")
    detector = registry.detector_id(settings.detector_model)
    current = None if version == registry.NO_CLASSIFIER else version
    return {
        "project": owner,
        "current": current,
        "previous": previous,
        "model_version": registry.model_version(detector, current),
    }


@router.get("/versions", response_model=VersionsResponse)
async def read_versions(request: Request, settings: SettingsDep, project: ProjectQuery = None) -> dict[str, Any]:
    """``model_version`` strings of a project's bundles, current first.

    The project is ``?project=``, else the ``project`` of a JSON body (Label Studio sends a GET with
    one), else ``DEFAULT_PROJECT``, else the only project that has models; Label Studio 1.23.2 names
    none at all. With no project, the one version is the detector alone.
    """
    project = project or await _body_project(request) or settings.default_project
    if project is None:
        trained = registry.projects(settings.models_dir)
        project = trained[0] if len(trained) == 1 else None
    detector = registry.detector_id(settings.detector_model)
    if project is None:
        detector_only = registry.model_version(detector, None)
        return {"versions": [detector_only], "current": detector_only}
    owner = _project(project)
    current = registry.read_current(settings.models_dir, owner)
    bundles = await run_in_threadpool(list_bundles, settings.models_dir, owner)
    newest_first = [b.version for b in reversed(bundles)]
    ordered = sorted(newest_first, key=lambda v: v != current)  # stable: current first, then newest first
    versions = [registry.model_version(detector, v) for v in ordered] + [registry.model_version(detector, None)]
    return {"versions": versions, "current": registry.model_version(detector, current)}


def _describe(models_dir, project: str, detector: str) -> dict[str, Any]:
    current = registry.read_current(models_dir, project)
    bundles = sorted(list_bundles(models_dir, project), key=lambda m: (m.created_at, m.version), reverse=True)
    return {
        "current": current,
        "model_version": registry.model_version(detector, current),
        "bundles": [_summary(models_dir, m, current, detector) for m in bundles],
    }


def _summary(models_dir, manifest: BundleManifest, current: str | None, detector: str) -> dict[str, Any]:
    metrics = read_metrics(bundle_dir(models_dir, manifest.project, manifest.version))
    return {
        "version": manifest.version,
        "model_version": registry.model_version(detector, manifest.version),
        "current": manifest.version == current,
        "status": manifest.status.value,
        "reason": manifest.status_reason,
        "created_at": manifest.created_at,
        "parent_version": manifest.parent_version,
        "job_id": manifest.job_id,
        "backbone": manifest.backbone,
        "labels": manifest.labels,
        "metrics": manifest.metrics,
        "test": {k: metrics.get("test", {}).get(k) for k in ("count", "top1", "macro_f1", "per_class")},
        "served_baseline": {k: metrics.get("served", {}).get(k) for k in ("version", "macro_f1", "note")},
        "split": metrics.get("split", {}).get("counts"),
        "grouping": metrics.get("split", {}).get("grouping"),
        "gate": {k: metrics.get("gate", {}).get(k) for k in GATE_FIELDS},
        "starting_weights": _starting(manifest),
    }


def _starting(manifest: BundleManifest) -> dict[str, Any] | None:
    start = manifest.starting_weights
    return None if start is None else {**start.model_dump(), "summary": start.describe()}


def _owner(models_dir, version: str) -> str:
    owners = [p for p in registry.projects(models_dir) if (models_dir / p / version).is_dir()]
    if len(owners) != 1:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND if not owners else status.HTTP_409_CONFLICT,
            f"bundle {version} {'not found' if not owners else f'exists in projects {owners}'}: pass ?project=<id>",
        )
    return owners[0]


def _project(value: str) -> str:
    return project_id(value)


async def _body_project(request: Request) -> str | None:
    body = await request.body()
    if not body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("project") if isinstance(data, dict) else None
