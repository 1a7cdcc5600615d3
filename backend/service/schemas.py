"""Request and response bodies of the Label Studio protocol and the detection API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


# What /health and / answer: Label Studio only checks the status.
class HealthResponse(BaseModel):
    status: str = "UP"
    model_class: str
    model_version: str


# What Label Studio posts to /setup (extra keys are tolerated: newer versions add some).
class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    project: str | int | dict | None = None
    label_config: str | None = Field(None, alias="schema")
    hostname: str | None = None
    access_token: str | None = None
    extra_params: dict | str | None = None


# Label Studio reads model_version from a /setup answer; warnings are for people reading it.
class SetupResponse(BaseModel):
    model_version: str
    warnings: list[str] | None = None


# What Label Studio posts to /predict.
class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    tasks: list[dict]
    project: str | int | dict | None = None
    label_config: str | None = None
    params: dict | None = None


# One prediction per task, in task order.
class PredictResponse(BaseModel):
    results: list[dict]


# JSON body of POST /v1/detect.
class DetectUrlsRequest(BaseModel):
    urls: list[str] = Field(min_length=1, max_length=1000)


# A plain error answer.
class ErrorResponse(BaseModel):
    detail: str
