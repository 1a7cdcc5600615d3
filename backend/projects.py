"""Project identity: Label Studio sends a project as ``"7.1714557000"``, ``7`` or ``{"id": 7, ...}``."""

from __future__ import annotations

import re

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def project_id(value: object) -> str:
    """The project's id as a string key: the part before the first dot, or a dict's ``id``.

    Raises:
        ValueError: no usable id (the message names the value).
    """
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or value is None:
        raise ValueError(f"no project id in {value!r}")
    text = str(value).split(".", 1)[0].strip()
    if not _ID.match(text):
        raise ValueError(f"invalid project id {value!r}")
    return text
