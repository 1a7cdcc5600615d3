"""Request and response bodies of every route: the Label Studio protocol, models, training jobs, detection.

They are what ``/openapi.json`` publishes, and FastAPI checks every answer against them, so the
schema is the service's real contract (``tests/backend/service/test_api_schema.py`` holds it to that).
Error bodies are :class:`ErrorResponse`; which route answers which error is declared with
``backend.service.http_errors.error_responses``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from backend.contracts.projects import ID_PATTERN, project_id
from backend.service.webhooks import Outcome

#: A project id as Label Studio spells it in a string: ``"7"`` or ``"7.1714557000"`` (id, dot, creation time).
PROJECT_REFERENCE_PATTERN = rf"^{ID_PATTERN}(\.[0-9]*)?$"

ProjectString = Annotated[str, Field(pattern=PROJECT_REFERENCE_PATTERN, examples=["7.1714557000"])]


def _whole_number(value: object) -> object:
    """Let through what JSON Schema calls an integer (``7``, ``7.0``), not ``true`` or ``"7"``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a whole number")
    return value


#: Up to 2**53 - 1: larger JSON numbers are not exact in most clients.
ProjectNumber = Annotated[int, Field(ge=0, le=2**53 - 1), BeforeValidator(_whole_number)]


class ProjectObject(BaseModel):
    """A project as Label Studio's webhooks send it: an object with its ``id`` (other keys are ignored)."""

    model_config = ConfigDict(extra="allow")

    id: ProjectString | ProjectNumber


#: How a body names a project: ``"7.1714557000"``, ``7`` or ``{"id": 7, ...}``.
ProjectRef = ProjectString | ProjectNumber | ProjectObject


#: The ``?project=`` query parameter of the model and detection routes.
ProjectQuery = Annotated[
    str | None, Query(pattern=PROJECT_REFERENCE_PATTERN, description="A Label Studio project id", examples=["7"])
]


def project_of(ref: ProjectRef) -> str:
    """The project id a body names."""
    return project_id(ref.id if isinstance(ref, ProjectObject) else ref)


def project_key(ref: ProjectRef | None) -> str | None:
    """The project id a body names, or None when it names none."""
    return None if ref is None else project_of(ref)


class ErrorResponse(BaseModel):
    """Every error answer, request validation included: one sentence Label Studio can show as it is."""

    detail: str = Field(examples=["invalid request: tasks: Field required"])


# --- the Label Studio protocol ----------------------------------------------------------------------


class HealthResponse(BaseModel):
    """What ``/health`` and ``/`` answer; Label Studio only checks the status."""

    status: str = "UP"
    model_class: str
    model_version: str
    detector: str = Field(
        description="The detector actually loaded: `mdlite` when DETECTOR_MODEL could not be downloaded "
        "(then `detector_fallback` says why), else DETECTOR_MODEL's detector id.",
        examples=["md_v5a", "mdlite"],
    )
    detector_fallback: str | None = Field(
        None, description="Why MegadetectorLite runs instead of DETECTOR_MODEL (null: it is what was configured)."
    )


class SetupRequest(BaseModel):
    """What Label Studio posts to ``/setup`` (extra keys are tolerated: newer versions add some)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    project: ProjectRef | None = None
    label_config: str = Field(
        alias="schema", min_length=1, description="The project's labeling config (XML); Label Studio always sends it."
    )
    hostname: str | None = None
    access_token: str | None = None
    extra_params: dict[str, Any] | str | None = Field(
        None, description="A JSON object, a JSON string of one, `key=value` lines, or null."
    )


# Label Studio reads model_version from a /setup answer; warnings are for people reading it.
class SetupResponse(BaseModel):
    """The one field Label Studio reads from a ``/setup`` answer."""

    model_version: str
    detector: str = Field(description="The detector actually loaded (as in `/health`).", examples=["md_v5a", "mdlite"])
    warnings: list[str] | None = None


class PredictRequest(BaseModel):
    """What Label Studio posts to ``/predict``; the labeling config is the body's, else the one ``/setup`` stored."""

    model_config = ConfigDict(extra="allow")

    tasks: list[dict[str, Any]] = Field(description="Label Studio tasks; an empty list gets an empty list of results.")
    project: ProjectRef | None = None
    label_config: str | None = None
    params: dict[str, Any] | None = None


class PredictResponse(BaseModel):
    """One prediction per task, in task order (``{"result": [...], "score": s, "model_version": v}``)."""

    results: list[dict[str, Any]]


# --- the detection API (MegaDetector batch output) ----------------------------------------------------


class DetectUrlsRequest(BaseModel):
    """JSON body of ``POST /v1/detect``: image references, fetched with the same rules as task images."""

    urls: list[str] = Field(min_length=1, max_length=1000)


class MDDetection(BaseModel):
    """One box: MegaDetector category, confidence, normalized ``[x_min, y_min, width, height]``."""

    category: str
    conf: float
    bbox: list[float] = Field(min_length=4, max_length=4)
    classifications: list[tuple[str, float]] | None = Field(
        None, description="Top-1 species as `[class id, score]` (animal boxes, when a classifier is served)."
    )


class MDImage(BaseModel):
    """One ``images[]`` entry: its detections, or ``detections: null`` and a ``failure``."""

    file: str
    detections: list[MDDetection] | None
    failure: str | None
    failure_detail: str | None = None


class MDInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    format_version: str
    detector: str
    detector_metadata: dict[str, Any] | None = None
    detection_completion_time: str
    model_version: str


class MDOutput(BaseModel):
    """The MegaDetector batch output format (what Timelapse, AddaxAI and EcoAssist read)."""

    info: MDInfo
    detection_categories: dict[str, str]
    classification_categories: dict[str, str]
    images: list[MDImage]


# --- trained classifiers ----------------------------------------------------------------------------


class HeldOutScores(BaseModel):
    """Scores of a bundle on its held-out split (None for a bundle whose metrics.json lacks them)."""

    count: int | None = None
    top1: float | None = None
    macro_f1: float | None = None
    per_class: dict[str, dict[str, int | float]] | None = None


class ServedBaseline(BaseModel):
    """The classifier that was served when the bundle was trained, scored on the same split."""

    version: str | None = None
    macro_f1: float | None = None
    note: str | None = None


class GateDecision(BaseModel):
    """What the promotion gate compared (None for a bundle trained before the gate recorded it)."""

    against: str | None = None
    comparable: bool | None = None
    species: list[str] | None = None
    crops: int | None = None
    gain: float | None = None
    interval: list[float] | None = None
    confidence: float | None = None
    min_gain: float | None = None


class StartingPoint(BaseModel):
    name: str = Field(description="`IMAGENET1K_V1 (...)`, `MegadetectorLite` or `random`.")
    source: str = Field(description="The URL or file of the starting weights; for `random`, why.")
    sha256: str | None
    pretrained: bool = Field(description="False: trained from random weights (no pretrained weights).")
    summary: str = Field(description="One sentence; starts with `no pretrained weights` for random init.")


class BundleSummary(BaseModel):
    version: str
    model_version: str
    current: bool
    status: str = Field(description="`promoted` or `rejected` (the gate's verdict)")
    reason: str
    created_at: str
    parent_version: str | None
    job_id: str | None
    backbone: str
    labels: list[str]
    metrics: dict[str, float]
    test: HeldOutScores
    served_baseline: ServedBaseline
    split: dict[str, dict[str, int]] | None = Field(description="Crops per species in each split.")
    grouping: str | None = Field(None, description="What the split grouped by (`location`, `sequence`, ...).")
    gate: GateDecision = Field(default_factory=GateDecision)
    starting_weights: StartingPoint | None = Field(
        None, description="What the backbone started from (None: a bundle written before it was recorded)."
    )


class ProjectModels(BaseModel):
    current: str | None = Field(description="The served bundle version (None: the detector alone).")
    model_version: str
    bundles: list[BundleSummary] = Field(description="Newest first.")


class ModelsResponse(BaseModel):
    projects: dict[str, ProjectModels]


class PromoteResponse(BaseModel):
    project: str
    current: str | None
    previous: str | None
    model_version: str


class VersionsResponse(BaseModel):
    versions: list[str] = Field(description="`model_version` strings, current first, then newest first.")
    current: str = Field(description="The `model_version` served now.")


# --- training ----------------------------------------------------------------------------------------


class TrainRequest(BaseModel):
    """Body of the legacy ``POST /train`` (Label Studio sends more keys; they are ignored)."""

    model_config = ConfigDict(extra="allow")

    project: ProjectRef


class TrainResponse(BaseModel):
    job: str = Field(examples=["train-7"])
    status: str = Field(description="RQ status of the project's training job (`queued`, `started`, ...).")
    created: bool = Field(description="False when a job of this project was already queued or running.")


class JobResponse(BaseModel):
    job: str
    status: str = Field(description="RQ status: `queued`, `started`, `finished`, `failed`, `stopped`, `canceled`...")
    stage: str | None
    progress: dict[str, Any] = Field(description="The job's meta: stage, trigger, counts, timings.")
    error: str | None
    result: Any = Field(None, description="What the job returned, once finished.")
    enqueued_at: str | None
    started_at: str | None
    ended_at: str | None


class WebhookResponse(BaseModel):
    """What a webhook delivery did (fields without a value are left out)."""

    status: Outcome
    action: str | None = Field(None, description="The event's `action` (absent when the payload has none).")
    project: str | None = None
    job: str | None = None
    job_status: str | None = None
    pending: int | None = None
    threshold: int | None = None
    detail: str | None = None
