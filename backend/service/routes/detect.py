"""``POST /v1/detect``: images in, MegaDetector batch-output JSON out (for tools other than Label Studio)."""

from __future__ import annotations

import functools
import json
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from backend.contracts.projects import optional_project_id
from backend.errors import ImageError
from backend.formats.megadetector import md_image, md_output
from backend.service.deps import RuntimeDep, SettingsDep, require_ls_auth
from backend.service.http_errors import error_responses
from backend.service.schemas import DetectUrlsRequest, MDOutput, ProjectQuery
from backend.vision.pipeline import ImageSource

router = APIRouter(
    prefix="/v1", tags=["detection"], dependencies=[Depends(require_ls_auth)], responses=error_responses(401)
)

#: Most files accepted in one multipart request.
MAX_FILES = 256

# The body is read by hand (either content type), so FastAPI cannot describe it.
_REQUEST_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "description": "Image files; `images` is the usual field name, files under any name are read.",
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "minItems": 1,
                            "maxItems": MAX_FILES,
                        }
                    },
                    "required": ["images"],
                },
            },
            "application/json": {"schema": DetectUrlsRequest.model_json_schema()},
        },
    }
}


@router.post(
    "/detect",
    openapi_extra=_REQUEST_BODY_DOC,
    response_model=MDOutput,
    response_model_exclude_unset=True,
    responses=error_responses(400, 415, 422),
)
async def create_detections(
    request: Request,
    runtime: RuntimeDep,
    settings: SettingsDep,
    project: ProjectQuery = None,
) -> dict[str, Any]:
    """Detect (and, with ``project``, classify) the images of a multipart upload or a JSON list of URLs.

    The answer is MegaDetector batch output. Each image that cannot be read has ``failure`` set; the
    others are processed as usual.
    """
    project_key = optional_project_id(project)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        names, sources = await _uploaded(request, settings.max_image_bytes)
    elif content_type.startswith("application/json"):
        names, sources = await _urls(request, runtime, project_key)
    else:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            'send images as multipart/form-data, or JSON {"urls": [...]} with Content-Type application/json',
        )
    started = time.perf_counter()
    slot = await run_in_threadpool(runtime.slot, project_key)
    thresholds = await run_in_threadpool(runtime.thresholds, project_key)
    results = await run_in_threadpool(runtime.pipeline.run, names, sources, slot.classifier, thresholds)
    labels = slot.classifier.labels if slot.classifier is not None else []
    for result in results:
        runtime.metrics.tasks.labels("detect", "failed" if result.boxes is None else "predicted").inc()
    runtime.metrics.request_seconds.labels("detect").observe(time.perf_counter() - started)
    images = [md_image(result.name, result.boxes, labels, result.failure) for result in results]
    return md_output(images, runtime.detector.model_name, labels, runtime.version_of(slot))


async def _uploaded(request: Request, max_bytes: int) -> tuple[list[str], list[ImageSource]]:
    form = await request.form(max_files=MAX_FILES, max_fields=MAX_FILES)
    uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not uploads:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "the form holds no image file")
    names, sources = [], []
    for index, upload in enumerate(uploads):
        names.append(upload.filename or f"image-{index}")
        if upload.size is not None and upload.size > max_bytes:
            sources.append(_failing(f"the upload is {upload.size} bytes, over MAX_IMAGE_BYTES={max_bytes}"))
        else:
            data = await upload.read()
            sources.append(functools.partial(bytes, data))
    return names, sources


async def _urls(request: Request, runtime: RuntimeDep, project: str | None) -> tuple[list[str], list[ImageSource]]:
    try:
        data = json.loads(await request.body())
    except ValueError as exc:  # not JSON, or bytes that are not UTF-8 text
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"malformed JSON body: {exc}") from exc
    try:
        body = DetectUrlsRequest.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, 'expected {"urls": ["...", ...]} with at least one URL'
        ) from exc
    setup = await run_in_threadpool(runtime.project_setup, project)
    client = runtime.ls_client(setup)
    return list(body.urls), [functools.partial(client.fetch_image, url) for url in body.urls]


def _failing(message: str) -> ImageSource:
    def source() -> bytes:
        raise ImageError(message)

    return source
