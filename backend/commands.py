"""The shape of every ``camtrap`` subcommand, and the argparse plumbing they share.

A subcommand is a :class:`Command`: ``add_arguments(parser)`` adds its flags and ``run(args)`` does the
work and returns the exit status, as torchvision's reference scripts pair ``get_args_parser`` with
``main(args)``. Modules list theirs in a module-level ``COMMANDS``; ``backend.cli`` puts them together.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from backend import redaction
from backend.config import get_settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class Command:
    """One ``camtrap`` subcommand."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None
    """Longer text for ``--help`` (a worked example); defaults to ``help``."""


def get_args_parser(
    commands: Sequence[Command], add_help: bool = True, prog: str = "camtrap"
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Camtrap ML backend", add_help=add_help)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in commands:
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description or command.help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def run_commands(commands: Sequence[Command], argv: Sequence[str] | None = None, prog: str = "camtrap") -> int:
    """Parse ``argv`` against ``commands`` and run the chosen one (help and exit code 2 when none)."""
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    redaction.install(*settings.secrets)
    parser = get_args_parser(commands, prog=prog)
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.run(args) or 0)
