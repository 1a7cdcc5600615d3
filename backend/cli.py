"""The ``camtrap`` command: the one composition root that puts the service and the trainer together.

It is the only module of ``backend`` that imports ``trainer`` (checked by import-linter): the web
service's ``serve`` and the trainer's commands (``train``, ``worker``, ...) become one command line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from backend.commands import Command, run_commands
from backend.config import get_settings
from backend.service import server
from backend.vision.counters import enable_multiprocess
from trainer import cli as trainer_cli
from trainer import detect, fetch, file_commands, import_md, prelabel_cli


def all_commands() -> list[Command]:
    """Every ``camtrap`` subcommand: the service's, the trainer's, then those of users who arrive with files."""
    return [
        *server.COMMANDS,
        *trainer_cli.COMMANDS,
        *fetch.COMMANDS,
        *file_commands.COMMANDS,
        *detect.COMMANDS,
        *import_md.COMMANDS,
        *prelabel_cli.COMMANDS,
    ]


#: Commands whose processes (uvicorn workers, RQ work horses) sum their metrics in DATA_DIR/metrics.
MULTIPROCESS_METRICS = ("serve", "worker")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``camtrap`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in MULTIPROCESS_METRICS:
        enable_multiprocess(get_settings().data_dir)
    return run_commands(all_commands(), args)


if __name__ == "__main__":
    sys.exit(main())
