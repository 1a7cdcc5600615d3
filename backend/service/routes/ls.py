"""The Label Studio ML-backend protocol: ``/``, ``/health``, ``/setup``, ``/predict`` and ``/metrics``.

Handlers stay thin: everything that can block (config parsing, Redis, downloads, inference) runs in
the thread pool, so ``/health`` and ``/setup`` answer at once even while predictions run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Response
from fastapi.concurrency import run_in_threadpool

from backend.contracts.setup_record import SetupRecord, parse_extra_params
from backend.errors import LabelConfigError
from backend.labelstudio.label_config import parse_label_config
from backend.labelstudio.predictions import empty_prediction
from backend.service.deps import RuntimeDep, SettingsDep, require_ls_auth
from backend.service.http_errors import error_responses
from backend.service.schemas import (
    HealthResponse,
    PredictRequest,
    PredictResponse,
    SetupRequest,
    SetupResponse,
    project_key,
)

logger = logging.getLogger(__name__)

router = APIRouter(tags=["label-studio"], dependencies=[Depends(require_ls_auth)], responses=error_responses(401))
#: The /metrics answer as the schema shows it.
PROMETHEUS_TEXT: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}
}
#: The errors of the routes that take a JSON body.
JSON_BODY_ERRORS = error_responses(400, 422)

#: ``model_class`` reported by /health.
MODEL_CLASS = "CamtrapMegaDetector"
#: /setup answers within this many seconds even if the project's classifier is still loading
#: (Label Studio gives up at 3 s).
SETUP_BUDGET_S = 2.0


@router.get("/", response_model=HealthResponse)
@router.get("/health", response_model=HealthResponse)
def read_health(settings: SettingsDep, runtime: RuntimeDep) -> HealthResponse:
    """Liveness and the default project's model version (never waits for inference)."""
    return HealthResponse(
        model_class=MODEL_CLASS,
        model_version=runtime.model_version(settings.default_project, load=False),
        detector=runtime.detector.id,
        detector_fallback=runtime.detector.fallback_reason,
    )


@router.post("/setup", response_model=SetupResponse, response_model_exclude_none=True, responses=JSON_BODY_ERRORS)
async def create_setup(body: SetupRequest, runtime: RuntimeDep) -> SetupResponse:
    """Check and remember the project's labeling config and extra_params; report its model version.

    A labeling config this backend cannot serve gets 422 with a sentence naming what it lacks.
    """
    project = project_key(body.project)
    extra_params = parse_extra_params(body.extra_params)
    mapping = await run_in_threadpool(parse_label_config, body.label_config)
    if project is None:
        return SetupResponse(model_version=runtime.model_version(None), detector=runtime.detector.id)
    record = SetupRecord(schema=body.label_config, extra_params=extra_params, hostname=body.hostname)
    await run_in_threadpool(runtime.setups.remember, project, record, body.access_token)
    version = None
    with anyio.move_on_after(SETUP_BUDGET_S):
        # abandon_on_cancel: the load goes on in its thread; /setup does not wait for it.
        version = await anyio.to_thread.run_sync(runtime.model_version, project, abandon_on_cancel=True)
    if version is None:
        logger.info("project %s: classifier still loading; /setup reports the pointer's version", project)
        return SetupResponse(model_version=runtime.model_version(project, load=False), detector=runtime.detector.id)
    unmapped = await run_in_threadpool(runtime.unmapped_labels, project, mapping)
    if not unmapped:
        return SetupResponse(model_version=version, detector=runtime.detector.id)
    warning = (
        f"the served classifier's labels {unmapped} match no choice of the labeling config, so they are never "
        "shown: add them as choices (or predicted_values) or retrain"
    )
    logger.warning("project %s: %s", project, warning)
    return SetupResponse(model_version=version, detector=runtime.detector.id, warnings=[warning])


@router.post("/predict", response_model=PredictResponse, responses=JSON_BODY_ERRORS)
async def create_predictions(body: PredictRequest, runtime: RuntimeDep) -> PredictResponse:
    """One prediction per task, in order; a task whose image fails gets an empty prediction.

    The labeling config is the body's, else the one ``/setup`` stored for the project; without a
    usable one the answer is 422 (an empty task list needs none).
    """
    project = project_key(body.project)
    if not body.tasks:
        return PredictResponse(results=[])
    started = time.perf_counter()
    try:
        results = await run_in_threadpool(runtime.predict_tasks, body.tasks, project, body.label_config)
    except LabelConfigError:
        raise
    except Exception:
        logger.exception("prediction of %d tasks of project %s failed", len(body.tasks), project)
        version = runtime.model_version(project, load=False)
        runtime.metrics.tasks.labels("predict", "failed").inc(len(body.tasks))
        results = [empty_prediction(version) for _ in body.tasks]
    runtime.metrics.request_seconds.labels("predict").observe(time.perf_counter() - started)
    return PredictResponse(results=results)


@router.get(
    "/metrics",
    response_class=Response,
    responses=PROMETHEUS_TEXT,
)
def read_metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics of this process."""
    content, media_type = runtime.metrics.render()
    return Response(content, media_type=media_type)
