"""Training triggers and jobs: ``POST /webhook``, ``POST /train``, ``GET``/``DELETE /jobs/{id}``.

Thin handlers: the logic is in ``backend.service.webhooks`` (events) and ``backend.service.jobs`` (the queue).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, status
from fastapi.concurrency import run_in_threadpool

from backend.service.deps import RedisDep, SettingsDep, require_ls_auth, require_webhook_auth
from backend.service.http_errors import error_responses
from backend.service.jobs import cancel_job, enqueue_training, job_info
from backend.service.schemas import JobResponse, TrainRequest, TrainResponse, WebhookResponse, project_of
from backend.service.webhooks import handle_within

logger = logging.getLogger(__name__)

router = APIRouter(tags=["training"], responses=error_responses(401, 422))

JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,128}$", description="RQ job id, e.g. train-7")]


@router.post(
    "/webhook",
    dependencies=[Depends(require_webhook_auth)],
    response_model=WebhookResponse,
    response_model_exclude_none=True,
    responses=error_responses(400),
)
async def receive_webhook(
    payload: Annotated[dict[str, Any], Body(description="A Label Studio webhook event: `action`, `project`, ...")],
    connection: RedisDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    """Handle a Label Studio webhook event; any JSON object gets a 2xx answer within 100 ms.

    Unknown actions are accepted and ignored; a Redis outage is reported in the body, not as an error.
    """
    result = await handle_within(payload, connection, settings)
    return result.body()


@router.post(
    "/train",
    dependencies=[Depends(require_ls_auth)],
    response_model=TrainResponse,
    responses=error_responses(400, 503),
)
async def start_training(body: TrainRequest, connection: RedisDep, settings: SettingsDep) -> TrainResponse:
    """Enqueue a training job (legacy ``/train`` alias of START_TRAINING)."""
    project = project_of(body.project)
    enqueued = await run_in_threadpool(enqueue_training, connection, settings, project, trigger="POST /train")
    return TrainResponse(job=enqueued.job_id, status=enqueued.status, created=enqueued.created)


@router.get(
    "/jobs/{job_id}",
    dependencies=[Depends(require_ls_auth)],
    response_model=JobResponse,
    responses=error_responses(404, 503),
)
async def read_job(job_id: JobId, connection: RedisDep) -> dict[str, Any]:
    """Status, stage, progress and error of a job."""
    info = await run_in_threadpool(job_info, connection, job_id)
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id} (finished jobs expire after JOB_RESULT_TTL_S)")
    return info


@router.delete(
    "/jobs/{job_id}",
    dependencies=[Depends(require_ls_auth)],
    response_model=JobResponse,
    responses=error_responses(404, 503),
)
async def delete_job(job_id: JobId, connection: RedisDep) -> dict[str, Any]:
    """Cancel a queued job or stop a running one."""
    info = await run_in_threadpool(cancel_job, connection, job_id)
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    return info
