"""The content-addressed download cache of task images, shared by every process under ``DATA_DIR``.

The cache is bounded (``IMAGE_CACHE_MAX_BYTES``): a hit touches the file's mtime, and after writes a
sweep deletes the least recently used files until the cache is back under 90 % of the cap. The sweep
holds an exclusive ``flock`` on ``<root>/.sweep.lock`` so that two processes never sweep at once (one
that finds the lock taken skips its sweep: the other is doing it). Readers need no lock: a file removed
under a reader is either read whole (POSIX keeps an open file) or a miss.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

#: After a sweep the cache holds at most this share of the cap (so sweeps are rare, not on every put).
LOW_WATER = 0.9
#: A process sweeps after writing this share of the cap since its last sweep (and on its first put).
SWEEP_EVERY = 1 / 64
#: Temp files older than this (seconds) were left by a killed writer and are removed by the sweep.
STALE_TMP_S = 3600.0
_TMP_PREFIX = ".tmp-"
_LOCK_NAME = ".sweep.lock"


def source_key(reference: str) -> str:
    """The cache key of an image reference: the sha256 of the reference string."""
    return hashlib.sha256(reference.encode("utf-8")).hexdigest()


class ImageCache:
    """Downloaded image bytes keyed by the sha256 of their source reference, at most ``max_bytes`` in all.

    Files live at ``<root>/<key[:2]>/<key>`` and are written atomically (temp file + ``os.replace``),
    so concurrent processes can share the directory. Between sweeps each process may add up to
    ``max_bytes * SWEEP_EVERY`` over the cap.

    Args:
        root: The cache directory (created on first write).
        max_bytes: Size cap in bytes; 0 disables eviction.
    """

    def __init__(self, root: Path, max_bytes: int = 0) -> None:
        self.root = Path(root)
        self.max_bytes = max(0, int(max_bytes))
        self._written_since_sweep: int | None = None  # None: this process has not swept yet

    def path_for(self, reference: str) -> Path:
        key = source_key(reference)
        return self.root / key[:2] / key

    def get(self, reference: str) -> bytes | None:
        """The cached bytes of ``reference``, or None on a miss; a hit marks the file recently used."""
        path = self.path_for(reference)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("image cache read failed for %s: %s", reference, exc)
            return None
        try:
            os.utime(path)
        except OSError:
            pass  # evicted meanwhile, or a read-only cache: the bytes are still good
        return data

    def put(self, reference: str, data: bytes) -> None:
        """Store ``data`` for ``reference``; a failure to write is logged, never raised.

        Data larger than the cap is not stored.
        """
        if self.max_bytes and len(data) > self.max_bytes:
            return
        path = self.path_for(reference)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            logger.warning("image cache write failed for %s: %s", reference, exc)
            return
        self._after_write(len(data))

    def _after_write(self, size: int) -> None:
        if not self.max_bytes:
            return
        if self._written_since_sweep is not None:
            self._written_since_sweep += size
            if self._written_since_sweep < self.max_bytes * SWEEP_EVERY:
                return
        self.sweep()

    def size_bytes(self) -> int:
        """Bytes of cached images now (temp files excluded)."""
        return sum(size for _, size, _ in self._entries())

    def sweep(self) -> int:
        """Evict least recently used files until the cache is under ``LOW_WATER`` of the cap.

        Returns the bytes removed (0 when another process holds the sweep lock).
        """
        if not self.max_bytes:
            return 0
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = open(self.root / _LOCK_NAME, "a+b")  # noqa: SIM115 - held across the sweep below
        except OSError as exc:
            logger.warning("image cache sweep skipped (%s): %s", self.root, exc)
            return 0
        with lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another process is sweeping right now
            self._written_since_sweep = 0
            entries = self._entries()
            total = sum(size for _, size, _ in entries)
            if total <= self.max_bytes:
                return 0
            target = int(self.max_bytes * LOW_WATER)
            removed = 0
            for path, size, _ in sorted(entries, key=lambda entry: entry[2]):
                if total - removed <= target:
                    break
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    logger.warning("image cache could not evict %s: %s", path, exc)
                    continue
                removed += size
            logger.info("image cache: evicted %d bytes (cap %d bytes)", removed, self.max_bytes)
            return removed

    def _entries(self) -> list[tuple[Path, int, float]]:
        """``(path, size, mtime)`` of every cached file; stale temp files are removed on the way."""
        entries: list[tuple[Path, int, float]] = []
        now = time.time()
        try:
            shards = [entry for entry in os.scandir(self.root) if entry.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return entries
        for shard in shards:
            try:
                files = list(os.scandir(shard.path))
            except FileNotFoundError:
                continue
            for entry in files:
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if entry.name.startswith(_TMP_PREFIX):
                    if now - stat.st_mtime > STALE_TMP_S:
                        Path(entry.path).unlink(missing_ok=True)
                    continue
                entries.append((Path(entry.path), stat.st_size, stat.st_mtime))
        return entries
