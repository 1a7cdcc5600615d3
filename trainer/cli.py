"""Command line: ``python -m trainer {train,worker}`` (also ``camtrap train`` / ``camtrap worker``).

``train`` runs the same typed function as the RQ job (``trainer.pipeline.run_training``) in this
process, without a queue; ``worker`` starts the RQ worker. Each subcommand has a parser factory
(``get_train_parser`` / ``get_worker_parser``, ``add_help`` as in torchvision's references) and a
``*_main(argv)`` function that ``backend.cli`` can register.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import redis

from backend.config import get_settings

logger = logging.getLogger(__name__)

#: Option name -> TrainConfig field, for the flags that override the settings.
_OVERRIDES = {
    "backbone": "backbone", "input_size": "input_size", "epochs": "epochs", "batch_size": "batch_size",
    "lr": "learning_rate", "weight_decay": "weight_decay", "patience": "patience", "seed": "seed",
    "workers": "num_workers", "min_examples": "min_examples_per_class", "other_label": "other_label",
    "device": "device", "min_gain": "promotion_min_gain",
}


def get_train_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Flags of ``train``; every one left out keeps the value from the environment (see the README)."""
    parser = argparse.ArgumentParser(description="Train a project's species classifier now, in this process.",
                                     add_help=add_help)
    parser.add_argument("--project", required=True, help="Label Studio project id")
    # Model
    parser.add_argument("--backbone", help="torchvision model name (default: TRAIN_BACKBONE, efficientnet_b0)")
    parser.add_argument("--input-size", type=int, help="network input in pixels (default: TRAIN_IMAGE_SIZE, 224)")
    # Optimization
    parser.add_argument("--epochs", type=int, help="maximum epochs (default: TRAIN_EPOCHS, 30)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: TRAIN_BATCH_SIZE, 32)")
    parser.add_argument("--lr", type=float, help="AdamW learning rate (default: TRAIN_LEARNING_RATE, 1e-3)")
    parser.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float,
                        help="AdamW weight decay (default: TRAIN_WEIGHT_DECAY, 0.05)")
    parser.add_argument("--patience", type=int, help="early-stopping patience in epochs (default: TRAIN_PATIENCE, 5)")
    parser.add_argument("--seed", type=int, help="random seed (default: TRAIN_SEED, 0)")
    parser.add_argument("--workers", type=int, help="data loader processes (default: TRAIN_NUM_WORKERS, 2)")
    parser.add_argument("--device", help="cuda or cpu (default: TRAIN_DEVICE, CUDA when available)")
    # Data and gate
    parser.add_argument("--min-examples", type=int, help="per-species minimum (default: MIN_EXAMPLES_PER_CLASS, 5)")
    parser.add_argument("--other-label", help="merge rare species into this label (default: OTHER_LABEL, drop them)")
    parser.add_argument("--min-gain", type=float, help="promotion margin (default: PROMOTION_MIN_GAIN, 0.0)")
    parser.add_argument("--no-redis", action="store_true",
                        help="do not use Redis (no stored /setup data, no announcement: backends see the new "
                             "pointer file at their next periodic check) (default: use REDIS_URL)")
    return parser


def train_main(argv: Sequence[str] | None = None) -> int:
    """``camtrap train``: run one training now and print its outcome as JSON."""
    from trainer.config import TrainConfig
    from trainer.errors import TrainerError
    from trainer.pipeline import run_training

    args = get_train_parser().parse_args(argv)
    settings = get_settings()
    _setup_logging(settings.log_level)
    overrides = {field: getattr(args, flag) for flag, field in _OVERRIDES.items() if getattr(args, flag) is not None}
    config = TrainConfig.from_settings(settings, **overrides)
    connection = None if args.no_redis else _redis_or_none(settings.effective_redis_url)
    job_id = f"cli-{args.project}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    try:
        outcome = run_training(args.project, settings=settings, config=config, job_id=job_id, connection=connection)
    except TrainerError as exc:
        logger.error("%s", exc)
        return 1
    sys.stdout.write(json.dumps(outcome.to_dict(), indent=2) + "\n")
    return 0


def get_worker_parser(add_help: bool = True) -> argparse.ArgumentParser:
    from trainer.worker import DEFAULT_QUEUES, WorkerClass

    parser = argparse.ArgumentParser(description="Run the RQ worker for training and bulk pre-annotation jobs.",
                                     add_help=add_help)
    parser.add_argument("queues", nargs="*", default=list(DEFAULT_QUEUES),
                        help=f"queues, highest priority first (default: {' '.join(DEFAULT_QUEUES)})")
    parser.add_argument("--worker-class", choices=[c.value for c in WorkerClass], default=WorkerClass.FORK.value,
                        help="fork: a forked process per job; spawn: a fresh interpreter per job; simple: in this "
                             "process (default: fork)")
    parser.add_argument("--burst", action="store_true", help="quit when the queues are empty (default: run forever)")
    parser.add_argument("--name", help="worker name (default: generated by RQ)")
    return parser


def worker_main(argv: Sequence[str] | None = None) -> int:
    """``camtrap worker``: run the RQ worker until stopped."""
    from trainer.worker import WorkerClass, run_worker

    args = get_worker_parser().parse_args(argv)
    settings = get_settings()
    _setup_logging(settings.log_level)
    run_worker(settings, queues=args.queues, worker_class=WorkerClass(args.worker_class), burst=args.burst,
               name=args.name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainer {train,worker} ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train_main, "worker": worker_main}
    if not argv or argv[0] not in commands:
        sys.stderr.write("usage: python -m trainer {train,worker} [options] (--help after a command lists them)\n")
        return 2
    return commands[argv[0]](argv[1:])


def _redis_or_none(url: str) -> redis.Redis | None:
    connection = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        connection.ping()
    except redis.RedisError as exc:
        logger.warning("Redis at %s is unavailable (%s): the new version will not be announced", url, exc)
        return None
    return connection


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
