"""``camtrap fetch TARGET``: put the weights a lab needs into the user cache ahead of time (docs/training.md).

Each target is a function that fetches (or finds) its files and returns where they are; a target that
cannot be fetched raises an error whose message says how to provide the files by hand. The set-up scripts
call ``camtrap fetch mdlite``, so an offline field station that was set up once keeps working.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from backend.commands import Command
from backend.config import Settings, get_settings
from backend.vision import mdlite_assets
from trainer import pretrained

logger = logging.getLogger(__name__)


def fetch_mdlite(args: argparse.Namespace) -> Path:
    """MegadetectorLite's weights and model kwargs, from the zamba 2.7.2 wheel, checked by SHA-256."""
    return mdlite_assets.fetch()


def fetch_imagenet(args: argparse.Namespace) -> Path:
    """A torchvision backbone's ImageNet weights, into the torch.hub cache, hash checked by torch.hub."""
    backbone = args.backbone or Settings.model_fields["train_backbone"].default
    return pretrained.fetch_imagenet(backbone, get_settings().pretrained_url)


#: Target name -> the function that fetches it.
TARGETS: dict[str, Callable[[argparse.Namespace], Path]] = {"mdlite": fetch_mdlite, "imagenet": fetch_imagenet}

FETCH_HELP = """Fetch model weights into the user cache, so that later runs work without a network.

  camtrap fetch mdlite      MegadetectorLite (the offline detector) from the zamba 2.7.2 wheel on PyPI,
                            into ~/.cache/camtrap-ml-backend/mdlite, SHA-256 checked
  camtrap fetch imagenet [--backbone NAME]
                            a torchvision backbone's ImageNet weights (default: efficientnet_b0) from
                            torchvision's URL (or PRETRAINED_URL) into $TORCH_HOME/hub/checkpoints
                            (~/.cache/torch/hub/checkpoints), hash checked by torch.hub
"""


def add_fetch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=sorted(TARGETS), help="what to fetch")
    parser.add_argument("--backbone", help="imagenet: the torchvision model (default: efficientnet_b0)")


def run_fetch(args: argparse.Namespace) -> int:
    """Fetch one target; 1 with the error's sentence when it cannot be fetched."""
    try:
        where = TARGETS[args.target](args)
    except (mdlite_assets.MissingAssetError, pretrained.FetchError) as exc:
        logger.error("%s", exc)
        return 1
    sys.stdout.write(f"{args.target}: {where}\n")
    return 0


COMMANDS = [
    Command(
        "fetch",
        "fetch model weights into the user cache ahead of time",
        add_fetch_arguments,
        run_fetch,
        description=FETCH_HELP,
    )
]
