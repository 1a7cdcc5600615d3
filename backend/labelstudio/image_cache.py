"""The content-addressed download cache of task images, shared by every process under ``DATA_DIR``."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)


def source_key(reference: str) -> str:
    """The cache key of an image reference: the sha256 of the reference string."""
    return hashlib.sha256(reference.encode("utf-8")).hexdigest()


class ImageCache:
    """Downloaded image bytes keyed by the sha256 of their source reference.

    Files live at ``<root>/<key[:2]>/<key>`` and are written atomically (temp file + ``os.replace``),
    so concurrent processes can share the directory. Nothing is ever evicted here.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, reference: str) -> Path:
        key = source_key(reference)
        return self.root / key[:2] / key

    def get(self, reference: str) -> bytes | None:
        """The cached bytes of ``reference``, or None on a miss."""
        try:
            return self.path_for(reference).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("image cache read failed for %s: %s", reference, exc)
            return None

    def put(self, reference: str, data: bytes) -> None:
        """Store ``data`` for ``reference``; a failure to write is logged, never raised."""
        path = self.path_for(reference)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            logger.warning("image cache write failed for %s: %s", reference, exc)
