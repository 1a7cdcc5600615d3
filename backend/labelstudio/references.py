"""What file a Label Studio image reference names, so exports can be matched to files on disk.

Label Studio stores image references in several shapes (``../shared/docs/user-formats.md`` §1.4):

==================================================  =====================================================
reference                                           file name
==================================================  =====================================================
``/data/upload/<project>/<8 hex>-<name>``           ``<name>`` (the random upload prefix removed)
``/data/local-files/?d=<path relative to root>``    ``<path>`` URL-unquoted (its last part is the name)
``s3://b/k``, ``gs://b/k``, ``azure-blob://c/k``    the key's last part
``http(s)://host/path?query``                       the path's last part, unquoted
==================================================  =====================================================

Uploads also sanitise the name the way Django's ``get_valid_filename`` does (spaces become ``_``,
characters outside ``[-\\w.]`` are dropped): :func:`upload_safe_name` gives that form of a local name.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

#: The ``<8 hex>-`` prefix Label Studio puts before an uploaded file's name.
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


def reference_path(reference: str) -> str:
    """The relative path a reference points at (``a/b.jpg``), as far as it says; never empty for a file."""
    ref = reference.strip()
    parts = urlsplit(ref)
    if "local-files" in parts.path and parts.query:
        values = parse_qs(parts.query).get("d")
        if values:
            return unquote(values[0]).lstrip("/")
    path = unquote(parts.path if parts.scheme or ref.startswith("/") else ref)
    if parts.scheme in ("s3", "gs", "azure-blob", "azure-spi"):
        path = f"{parts.netloc}/{path.lstrip('/')}"
    pure = PurePosixPath(path)
    if "upload" in pure.parts:
        return UPLOAD_PREFIX.sub("", pure.name)
    return str(pure).lstrip("/")


def reference_name(reference: str) -> str:
    """The file name a reference names: the last part of :func:`reference_path`."""
    return PurePosixPath(reference_path(reference)).name


def upload_safe_name(name: str) -> str:
    """``name`` as a Label Studio upload stores it (Django's ``get_valid_filename``)."""
    return re.sub(r"(?u)[^-\w.]", "", str(name).strip().replace(" ", "_"))
