"""Training triggers and jobs: ``POST /webhook``, ``POST /train``, ``GET``/``DELETE /jobs/{id}``.

Thin handlers: the logic is in ``backend.service.webhooks`` (events) and ``backend.service.jobs`` (the queue).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from backend.contracts.projects import project_id
from backend.service.deps import RedisDep, SettingsDep, require_ls_auth, require_webhook_secret
from backend.service.jobs import cancel_job, enqueue_training, job_info
from backend.service.webhooks import handle_within

logger = logging.getLogger(__name__)

router = APIRouter(tags=["training"])

_basic = HTTPBasic(auto_error=False, realm="camtrap")

JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,128}$", description="RQ job id, e.g. train-7")]


def require_webhook_auth(
    request: Request, settings: SettingsDep, credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)]
) -> None:
    """The webhook secret, or the basic-auth credentials Label Studio sends with START_TRAINING.

    Label Studio's "Start Training" posts to ``/webhook`` with the model's basic auth but cannot add the
    secret header, while its webhook deliveries carry the header but no basic auth: either one passes.
    """
    try:
        require_webhook_secret(request, settings)
    except HTTPException:
        if credentials is None or not (settings.basic_auth_user or settings.basic_auth_pass):
            raise
        require_ls_auth(settings, credentials)


@router.post("/webhook", dependencies=[Depends(require_webhook_auth)])
async def receive_webhook(
    payload: Annotated[dict[str, Any], Body()], connection: RedisDep, settings: SettingsDep
) -> dict[str, Any]:
    """Handle a Label Studio webhook event; always answers 2xx within 100 ms."""
    result = await handle_within(payload, connection, settings)
    return result.body()


@router.post("/train", dependencies=[Depends(require_ls_auth)])
async def start_training(
    connection: RedisDep, settings: SettingsDep, payload: Annotated[dict[str, Any] | None, Body()] = None
) -> dict[str, Any]:
    """Enqueue a training job (legacy ``/train`` alias of START_TRAINING)."""
    project = project_id((payload or {}).get("project"))
    enqueued = await run_in_threadpool(enqueue_training, connection, settings, project, trigger="POST /train")
    return {"job": enqueued.job_id, "status": enqueued.status, "created": enqueued.created}


@router.get("/jobs/{job_id}", dependencies=[Depends(require_ls_auth)])
async def read_job(job_id: JobId, connection: RedisDep) -> dict[str, Any]:
    """Status, stage, progress and error of a job."""
    info = await run_in_threadpool(job_info, connection, job_id)
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id} (finished jobs expire after JOB_RESULT_TTL_S)")
    return info


@router.delete("/jobs/{job_id}", dependencies=[Depends(require_ls_auth)])
async def delete_job(job_id: JobId, connection: RedisDep) -> dict[str, Any]:
    """Cancel a queued job or stop a running one."""
    info = await run_in_threadpool(cancel_job, connection, job_id)
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    return info
