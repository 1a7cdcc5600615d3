"""Writing files so that a reader never sees half of one: a temporary file beside the target, renamed."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends without error,
    removed when it raises (nothing half-written is ever left under the final name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomically(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_target`."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_target`."""
    return write_bytes_atomically(path, text.encode("utf-8"))


def write_json_atomically(path: Path, value: Any, *, indent: int | None = 1) -> Path:
    """``json.dumps(value)`` plus a newline, written atomically."""
    return write_text_atomically(path, json.dumps(value, indent=indent, ensure_ascii=False) + "\n")
