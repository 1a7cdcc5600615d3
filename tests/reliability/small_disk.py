"""A real full filesystem for the disk-full tests: a tmpfs with a size cap, and a filler file to fill it.

tmpfs is the kernel's own filesystem, so a write past the cap fails exactly as on a full disk
(``ENOSPC``, "No space left on device"); nothing in the code under test is patched. Mounting needs
root (or CAP_SYS_ADMIN); where it is refused the tests are skipped with that reason.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

FILLER = ".filler"
#: tmpfs allocates in pages of this many bytes.
PAGE = os.sysconf("SC_PAGE_SIZE")
_CHUNKS = (1 << 20, 1 << 16, 1 << 12, 1 << 9)


@contextmanager
def mounted_tmpfs(mountpoint: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_bytes`` at ``mountpoint`` for the block; unmounted (lazily if busy) after it."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot build a small filesystem for the disk-full tests")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip() or done.returncode})")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` with ``FILLER`` until a write fails with ENOSPC, then free ``leave`` bytes of it again."""
    with open(disk / FILLER, "ab", buffering=0) as handle:
        for chunk in _CHUNKS:
            while True:
                try:
                    handle.write(bytes(chunk))
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    size = (disk / FILLER).stat().st_size
    os.truncate(disk / FILLER, max(0, size - leave))
    # tmpfs counts whole pages: the free space is exact when ``leave`` is a multiple of the page size
    expected = leave if leave % PAGE == 0 else -(-leave // PAGE) * PAGE
    assert free_bytes(disk) in (expected, leave), f"{disk} has {free_bytes(disk)} bytes free, not {leave}"


def make_room(disk: Path) -> None:
    """Remove the filler: the disk has room again."""
    (disk / FILLER).unlink(missing_ok=True)
