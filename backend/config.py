"""Every setting of the service and the worker, read once from the environment.

Each field's env variable is its name in upper case (``data_dir`` -> ``DATA_DIR``). The README lists
them all with their defaults; :func:`get_settings` is the only place the environment is read.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Redis used when ``REDIS_URL`` is unset; ``camtrap serve`` starts one there if none answers.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: ``OTHER_LABEL`` value that drops rare species instead of pooling them.
NO_OTHER_LABEL = "-"


def no_other_label(value: str | None) -> str | None:
    """``OTHER_LABEL`` as used: None for :data:`NO_OTHER_LABEL` (or blank), else the label."""
    if value is None or not value.strip() or value.strip() == NO_OTHER_LABEL:
        return None
    return value.strip()


class Settings(BaseSettings):
    """Configuration shared by the backend and the trainer (one object per process)."""

    model_config = SettingsConfigDict(
        env_file=None, env_ignore_empty=True, extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    # --- Label Studio -----------------------------------------------------------------------
    label_studio_url: str | None = None
    """Base URL of Label Studio, e.g. ``http://localhost:8080``. Falls back to /setup's ``hostname``."""
    label_studio_api_key: str | None = None
    """Legacy token (sent as ``Token``) or personal access token (exchanged for a ``Bearer`` token)."""
    label_studio_timeout_s: float = Field(60.0, gt=0)
    """Read timeout of Label Studio API calls (token refresh, exports), in seconds."""
    label_studio_retries: int = Field(3, ge=0)
    """Retries of a Label Studio API call that failed with a 5xx, a timeout or a lost connection (GETs on any of
    them; other calls on 502/503 or when nothing was sent; prediction pushes on any, after re-reading what
    arrived); at most this plus one tries."""
    label_studio_retry_backoff_s: float = Field(0.5, ge=0)
    """Wait before the first retry of a Label Studio API call, doubled before each next one, in seconds."""

    # --- Service ----------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Address `camtrap serve` binds; use 0.0.0.0 in containers."""
    port: int = 9090
    """Port of the service (the ML backend URL you give Label Studio)."""
    workers: int = 1
    """uvicorn worker processes; each loads its own detector."""
    torch_threads: int = Field(0, ge=0)
    """Intra-op torch threads in each backend process (0 = CPU cores / WORKERS, at least 1): more threads than
    cores across processes made a one-crop classification 10x slower on a busy 2-core machine."""
    worker_healthcheck_timeout_s: int = 120
    """Seconds a uvicorn worker may not answer its supervisor's ping (importing torch and loading the detector
    on a busy CPU can take longer than uvicorn's own 5 s) before it is killed and replaced."""
    log_level: str = "INFO"
    """Python log level of the service and the worker."""
    basic_auth_user: str | None = None
    """With BASIC_AUTH_PASS: HTTP basic auth on every route Label Studio calls (not /webhook)."""
    basic_auth_pass: str | None = None
    """Password for BASIC_AUTH_USER."""
    webhook_secret: str | None = None
    """If set, /webhook requires header ``X-Webhook-Secret`` (or ``?secret=``) to equal it."""
    max_request_bytes: int = Field(300 * 1024 * 1024, ge=0)
    """Request bodies larger than this are refused with 413 before they are read whole, in bytes (0 = no limit)."""
    setup_refresh_s: float = Field(2.0, ge=0)
    """A backend process re-reads a project's /setup record from Redis when its copy is older, in seconds."""
    default_project: str | None = None
    """Project whose model_version /health reports (unset: the detector-only version)."""

    # --- Storage and coordination -----------------------------------------------------------
    data_dir: Path = Path("./data")
    """Models (bundles + pointers), image cache, job scratch space and the embedded Redis's files."""
    redis_url: str | None = None
    """Unset: ``redis://127.0.0.1:6379/0``, started by ``camtrap serve`` if nothing answers there."""
    redis_prefix: str = "camtrap:"
    """Prefix of every Redis key and channel this project uses."""

    # --- Detector ---------------------------------------------------------------------------
    detector_model: str = "MDV5A"
    """A MegaDetector name the ``megadetector`` package knows (downloaded and cached), a ``.pt`` path, or
    ``mdlite`` (MegadetectorLite, offline: ``camtrap fetch mdlite``)."""
    detector_device: str | None = None
    """``cuda``, ``cpu`` or unset for CUDA when available."""
    detector_batch_size: int = 8
    """Images per detector forward pass."""
    detector_image_size: int | None = None
    """Inference size in pixels; unset uses the model's own (1280 for MDv5)."""
    # DETECTOR_FALLBACK (issue 8): the offline detector when DETECTOR_MODEL cannot be downloaded.
    detector_fallback: Literal["mdlite", "none"] = "mdlite"
    """``mdlite``: start with MegadetectorLite (and say so) when the named MegaDetector cannot be downloaded;
    ``none``: refuse to start."""
    model_poll_interval_s: float = Field(5.0, gt=0)
    """How often each backend process re-reads the model pointers of its projects (besides Redis announcements)."""

    # --- Thresholds (overridable per project through extra_params) --------------------------
    detection_threshold: float = Field(0.01, ge=0, le=1)
    """Detections kept internally (and in /v1/detect output)."""
    classify_threshold: float = Field(0.1, ge=0, le=1)
    """Animal boxes at or above this confidence are cropped and classified."""
    show_threshold: float = Field(0.2, ge=0, le=1)
    """Boxes at or above this confidence are sent to Label Studio."""
    species_threshold: float = Field(0.3, ge=0, le=1)
    """A species guess below this probability (calibrated for bundles that carry a calibration) is not emitted."""

    # --- Image access -----------------------------------------------------------------------
    image_timeout_s: float = 30.0
    """Timeout of one image download, in seconds."""
    max_image_bytes: int = 50 * 1024 * 1024
    """Largest image file accepted, in bytes."""
    max_image_pixels: int = 120_000_000
    """Largest image accepted, in pixels (width x height)."""
    download_concurrency: int = 4
    """Parallel image downloads per /predict request."""
    allowed_image_hosts: Annotated[list[str], NoDecode] = []
    """Hosts (comma-separated) besides Label Studio's that image URLs may point to."""
    allow_private_image_urls: bool = False
    """Allow URLs resolving to loopback/private addresses (outside Label Studio's own host)."""
    image_cache_max_bytes: int = Field(2 * 1024**3, ge=0)
    """Size cap of the downloaded-image cache in bytes (least recently used files evicted; 0 = no cap)."""

    # --- Training ---------------------------------------------------------------------------
    train_every_n_annotations: int = 50
    """Enqueue training after this many new/updated annotations in a project (0 = off)."""
    train_backbone: str = "efficientnet_b0"
    """Backbone of the species classifier: a torchvision model name, or mdlite (MegadetectorLite's)."""
    train_image_size: int = 224
    """Classifier input size in pixels (square crops are resized to it)."""
    train_epochs: int = 30
    """Maximum training epochs (early stopping may end sooner)."""
    train_batch_size: int = 32
    """Crops per training step."""
    train_learning_rate: float = 1e-3
    """AdamW peak learning rate (cosine schedule)."""
    train_patience: int = 5
    """Epochs without validation macro-F1 improvement before early stopping."""
    train_seed: int = 0
    """Seed for the split, sampling and initialisation."""
    train_num_workers: int = 2
    """DataLoader worker processes."""
    min_examples_per_class: int = 5
    """Species with fewer crops are merged into OTHER_LABEL (dropped when it is empty)."""
    other_label: str | None = "other"
    """Label that species under ``MIN_EXAMPLES_PER_CLASS`` crops are pooled into; ``-`` drops them instead."""
    location_fields: Annotated[list[str], NoDecode] = ["location", "site", "camera"]
    """Task data fields (comma-separated, first present wins) that group photos for the held-out split."""
    sequence_gap_s: float = Field(60.0, ge=0)
    """Photos of one place taken at most this many seconds apart (EXIF DateTimeOriginal) are one sequence."""
    promotion_min_gain: float = 0.0
    """The lower bound of the macro-F1 gain's GATE_CONFIDENCE interval must exceed this to promote."""
    gate_min_test_per_class: int = Field(5, ge=1)
    """The gate compares only species with at least this many test crops the served model never saw."""
    gate_confidence: float = Field(0.9, gt=0, lt=1)
    """Confidence of the gate's paired-bootstrap interval for the macro-F1 gain."""
    job_timeout_s: int = 6 * 3600
    """A training job running longer is stopped and marked failed, in seconds."""
    job_failure_ttl_s: int = 7 * 24 * 3600
    """How long a failed job stays visible in GET /jobs/{id}, in seconds."""
    job_result_ttl_s: int = 7 * 24 * 3600
    """How long a finished job's result and progress stay readable through ``GET /jobs/{id}``, in seconds."""
    train_weight_decay: float = Field(0.05, ge=0)
    """AdamW weight decay."""
    train_val_fraction: float = Field(0.15, gt=0, lt=0.5)
    """Share of the crops (whole locations) held out for early stopping."""
    train_test_fraction: float = Field(0.2, gt=0, lt=0.5)
    """Share of the crops (whole locations) held out for the final evaluation and the gate."""
    train_device: str | None = None
    """``cuda``, ``cpu`` or unset for CUDA when available (AMP is used on CUDA)."""
    prelabel_on_import: bool = True
    """On TASKS_CREATED, a worker predicts the new tasks and pushes the predictions to Label Studio."""
    prelabel_chunk_size: int = Field(100, ge=1)
    """Task ids per pre-annotation job (one RQ job per chunk on queue prelabel), in tasks."""
    relabel_on_promotion: bool = True
    """When a project's served classifier changes, job relabel-<project> re-classifies its unannotated tasks."""

    # --- Pretrained weights (trainer/pretrained.py) -------------------------------------------
    pretrained_url: str = ""
    """URL of the backbone's ImageNet state dict ('' = torchvision's); a -<hash>.pth file name is checked."""
    offline_backbone: str = "mdlite"
    """Trained when TRAIN_BACKBONE is unset and its ImageNet weights cannot be had ('' = random-init default)."""

    @field_validator("other_label", mode="after")
    @classmethod
    def _no_other_label(cls, value: str | None) -> str | None:
        return no_other_label(value)

    @field_validator("allowed_image_hosts", "location_fields", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def secrets(self) -> tuple[str | None, ...]:
        """The credentials this process holds, which logs, job errors and error bodies must never show."""
        return (self.label_studio_api_key, self.basic_auth_pass, self.webhook_secret)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
