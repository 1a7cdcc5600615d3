"""The webhook actions Label Studio 1.23 really sends, and what each one does here."""

from __future__ import annotations

from enum import StrEnum


class LSEvent(StrEnum):
    """``action`` values of Label Studio webhook deliveries (note the plural ANNOTATIONS_DELETED)."""

    ANNOTATION_CREATED = "ANNOTATION_CREATED"
    ANNOTATION_UPDATED = "ANNOTATION_UPDATED"
    ANNOTATIONS_CREATED = "ANNOTATIONS_CREATED"
    ANNOTATIONS_DELETED = "ANNOTATIONS_DELETED"
    TASKS_CREATED = "TASKS_CREATED"
    TASKS_DELETED = "TASKS_DELETED"
    PROJECT_UPDATED = "PROJECT_UPDATED"
    START_TRAINING = "START_TRAINING"

    @classmethod
    def parse(cls, action: object) -> LSEvent | None:
        """The event for ``action``, or None for actions we accept and ignore."""
        try:
            return cls(str(action))
        except ValueError:
            return None


#: Events that count towards the auto-training threshold.
COUNTED_EVENTS = frozenset({LSEvent.ANNOTATION_CREATED, LSEvent.ANNOTATION_UPDATED, LSEvent.ANNOTATIONS_CREATED})
