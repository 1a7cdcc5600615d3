"""Command line: ``camtrap train`` / ``camtrap worker``, also ``python -m trainer {train,worker}``.

``train`` runs the same typed function as the RQ job (``trainer.pipeline.run_training``) in this
process, without a queue; ``worker`` starts the RQ worker. ``backend.cli`` (the composition root)
picks up :data:`COMMANDS`; each command is an ``add_*_arguments(parser)`` + ``run_*(args)`` pair,
as torchvision's reference scripts pair ``get_args_parser`` with ``main(args)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import redis

from backend.commands import Command, run_commands
from backend.commands import get_args_parser as build_parser
from backend.config import get_settings
from backend.contracts.redis_client import TOOL, connect

logger = logging.getLogger(__name__)

#: Option dest -> TrainConfig field, for the flags that override the settings.
_OVERRIDES = {
    "backbone": "backbone",
    "input_size": "input_size",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "weight_decay": "weight_decay",
    "patience": "patience",
    "seed": "seed",
    "workers": "num_workers",
    "min_examples": "min_examples_per_class",
    "other_label": "other_label",
    "device": "device",
    "min_gain": "promotion_min_gain",
    "gate_min_test_per_class": "gate_min_test_per_class",
    "gate_confidence": "gate_confidence",
}


TRAIN_HELP = """Train a species classifier now, in this process, with the same code a training job runs.

From files (no server needed): camtrap train BASE, where BASE holds
  label_studio.json + label_config.xml + images/   a Label Studio JSON export, its labeling config
                                                   and the task images (found by file name)
  crops/ + label_studio.csv                        crops and a Label Studio CSV export of a Choices
                                                   project over them (the comvis Stage 3 recipe)
  crops/ + labels.csv                              crops and a path,label[,location] table
and optionally label_spec.json (label translations). A location column gives a split by location,
otherwise a seeded stratified split. Outputs go to BASE/logs/ (or --logdir): model.pt (TorchScript, runs
without this code), label_correspondance.json and label_index.json, metrics.json, confusion_matrix.png,
TensorBoard event files, and the model bundle under logs/models/ (a later run is gated against it).

From Label Studio: camtrap train --project N (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY), which promotes
the new model for the service when it beats the served one.

Examples:
  camtrap train ./season-2026 --epochs 20
  camtrap train ./season-2026 --logdir ./logs
  camtrap train --project 7
"""


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``train``; each one left out keeps the value from the environment."""
    parser.add_argument(
        "base",
        nargs="?",
        type=Path,
        metavar="BASE",
        help="a training folder (see below); give BASE or --project, not both",
    )
    parser.add_argument("--project", help="Label Studio project id: train from its annotations in Label Studio")
    parser.add_argument("--logdir", type=Path, help="with BASE: where the outputs go (default: BASE/logs)")
    # Model
    parser.add_argument("--backbone", help="torchvision model name (default: TRAIN_BACKBONE, efficientnet_b0)")
    parser.add_argument("--input-size", type=int, help="network input in pixels (default: TRAIN_IMAGE_SIZE, 224)")
    # Optimization
    parser.add_argument("--epochs", type=int, help="maximum epochs (default: TRAIN_EPOCHS, 30)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: TRAIN_BATCH_SIZE, 32)")
    parser.add_argument("--lr", type=float, help="AdamW learning rate (default: TRAIN_LEARNING_RATE, 1e-3)")
    parser.add_argument(
        "--wd",
        "--weight-decay",
        dest="weight_decay",
        type=float,
        help="AdamW weight decay (default: TRAIN_WEIGHT_DECAY, 0.05)",
    )
    parser.add_argument("--patience", type=int, help="early-stopping patience in epochs (default: TRAIN_PATIENCE, 5)")
    parser.add_argument("--seed", type=int, help="random seed (default: TRAIN_SEED, 0)")
    parser.add_argument("--workers", type=int, help="data loader processes (default: TRAIN_NUM_WORKERS, 2)")
    parser.add_argument("--device", help="cuda or cpu (default: TRAIN_DEVICE, CUDA when available)")
    # Data and gate
    parser.add_argument("--min-examples", type=int, help="per-species minimum (default: MIN_EXAMPLES_PER_CLASS, 5)")
    parser.add_argument(
        "--other-label", help="pool rare species into this label, '-' drops them (default: OTHER_LABEL, other)"
    )
    parser.add_argument(
        "--min-gain", type=float, help="lower bound the gain must exceed (default: PROMOTION_MIN_GAIN, 0.0)"
    )
    parser.add_argument(
        "--gate-min-test-per-class",
        type=int,
        help="test crops per compared species (default: GATE_MIN_TEST_PER_CLASS, 5)",
    )
    parser.add_argument(
        "--gate-confidence", type=float, help="bootstrap interval of the gain (default: GATE_CONFIDENCE, 0.9)"
    )
    parser.add_argument(
        "--no-redis",
        action="store_true",
        help="do not use Redis: no stored /setup data and no announcement; backends see the new "
        "pointer at their next periodic check (default: use REDIS_URL)",
    )


def run_train(args: argparse.Namespace) -> int:
    """Run one training now and write its outcome to stdout as JSON; 1 on a training error."""
    from trainer.config import TrainConfig
    from trainer.errors import TrainerError
    from trainer.pipeline import run_training, train_folder

    settings = get_settings()
    overrides = {field: getattr(args, dest) for dest, field in _OVERRIDES.items() if getattr(args, dest) is not None}
    config = TrainConfig.from_settings(settings, **overrides)
    if (args.base is None) == (args.project is None):
        logger.error("give a training folder BASE or --project N (one of them): camtrap train --help")
        return 2
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    try:
        if args.base is not None:
            outcome = train_folder(
                args.base, settings=settings, config=config, job_id=f"cli-folder-{stamp}", logs=args.logdir
            )
        else:
            connection = None if args.no_redis else _redis_or_none(settings.effective_redis_url)
            job_id = f"cli-{args.project}-{stamp}"
            outcome = run_training(args.project, settings=settings, config=config, job_id=job_id, connection=connection)
    except TrainerError as exc:
        logger.error("%s", exc)
        return 1
    sys.stdout.write(json.dumps(outcome.to_dict(), indent=2) + "\n")
    return 0


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    from trainer.worker import DEFAULT_QUEUES, WorkerClass

    parser.add_argument(
        "queues",
        nargs="*",
        default=list(DEFAULT_QUEUES),
        help=f"queues, highest priority first (default: {' '.join(DEFAULT_QUEUES)})",
    )
    parser.add_argument(
        "--worker-class",
        choices=[c.value for c in WorkerClass],
        default=WorkerClass.FORK.value,
        help="fork: a forked process per job; spawn: a fresh interpreter per job; simple: in this "
        "process (default: fork)",
    )
    parser.add_argument("--burst", action="store_true", help="quit when the queues are empty (default: run forever)")
    parser.add_argument("--name", help="worker name (default: generated by RQ)")


def run_worker_command(args: argparse.Namespace) -> int:
    """Run the RQ worker until stopped."""
    from trainer.worker import WorkerClass, run_worker

    run_worker(
        get_settings(),
        queues=args.queues,
        worker_class=WorkerClass(args.worker_class),
        burst=args.burst,
        name=args.name,
    )
    return 0


COMMANDS = [
    Command(
        "train",
        "train a species classifier now, in this process: from a folder of files, or a Label Studio project",
        add_train_arguments,
        run_train,
        description=TRAIN_HELP,
    ),
    Command(
        "worker",
        "run the RQ worker for training and bulk pre-annotation jobs",
        add_worker_arguments,
        run_worker_command,
    ),
]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """``python -m trainer``'s parser: the same subcommands as ``camtrap``."""
    return build_parser(COMMANDS, add_help=add_help, prog="python -m trainer")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainer {train,worker} ...``."""
    return run_commands(COMMANDS, argv, prog="python -m trainer")


def _redis_or_none(url: str) -> redis.Redis | None:
    connection = connect(url, TOOL)
    try:
        connection.ping()
    except redis.RedisError as exc:
        logger.warning("Redis at %s is unavailable (%s): the new version will not be announced", url, exc)
        return None
    return connection
