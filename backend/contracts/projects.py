"""Project identity: Label Studio sends a project as ``"7.1714557000"``, ``7`` or ``{"id": 7, ...}``."""

from __future__ import annotations

import re

from backend.errors import InvalidProjectError

#: What a project id is (a regular expression without anchors, for schemas that restate it). It starts
#: with a letter or digit because it is also a directory name (``backend.contracts.bundle.project_dir``).
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
_ID = re.compile(rf"^{ID_PATTERN}$")


def project_id(value: object) -> str:
    """The project's id as a string key: the part before the first dot, or a dict's ``id``.

    Raises:
        InvalidProjectError: no usable id (the message names the value); it is also a ``ValueError``.
    """
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or value is None:
        raise InvalidProjectError(f"no project id in {value!r}")
    text = str(value).split(".", 1)[0].strip()
    if not _ID.match(text):
        raise InvalidProjectError(f"invalid project id {value!r}")
    return text


def optional_project_id(value: object) -> str | None:
    """:func:`project_id`, or None when ``value`` is absent (None or ``""``).

    Raises:
        InvalidProjectError: a value is given but is not a project id.
    """
    if value is None or value == "":
        return None
    return project_id(value)
