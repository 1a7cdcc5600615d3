"""The per-process model slots: which classifier each project serves in this process, swapped atomically.

One :class:`ClassifierSlots` per process holds, per project, a :class:`ClassifierSlot`: the bundle
``current.json`` named when it was read and the classifier loaded from it. A request reads its
project's slot once and uses it to the end, so a swap never mixes two models in one answer and the
``model_version`` it stamps is the classifier it used. Slots are replaced, never mutated: on first use
of a project and on :meth:`ClassifierSlots.refresh` (called by the watcher thread,
:class:`~backend.service.model_watcher.ModelWatcher`). A bundle that fails to load is logged and the
previous classifier stays in service.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from backend.contracts import registry
from backend.contracts.bundle import bundle_dir
from backend.errors import BundleError
from backend.vision.classifier import SpeciesClassifier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierSlot:
    """What a project serves: the pointer value acted on, and the classifier loaded (None: boxes only)."""

    pointer: str | None = None
    classifier: SpeciesClassifier | None = None

    @property
    def version(self) -> str | None:
        return self.classifier.version if self.classifier is not None else None


NO_CLASSIFIER = ClassifierSlot()


class ClassifierSlots:
    """The classifier slot of every project this process has served.

    Args:
        models_dir: ``DATA_DIR/models``.
        detector_id: The detector's id, the first half of every ``model_version``.
        device: Where classifiers run.
        on_swap: Called after a project's served classifier changed (metrics).
    """

    def __init__(
        self, models_dir: Path, detector_id: str, device: torch.device, on_swap: Callable[[str], None] | None = None
    ) -> None:
        self.models_dir = models_dir
        self.detector_id = detector_id
        self.device = device
        self._on_swap = on_swap
        self._slots: dict[str, ClassifierSlot] = {}
        self._load_lock = threading.Lock()

    def model_version(self, project: str | None, *, load: bool = True) -> str:
        """The project's ``model_version``: detector id + the version of the classifier it serves.

        Args:
            project: Project id, or None for the detector alone.
            load: Load the project's classifier if this process has not yet (False: report the pointer's
                version without loading; used by ``/health``, which must never wait).
        """
        if project is None:
            return registry.model_version(self.detector_id, None)
        slot = self._slots.get(project)
        if slot is None and not load:
            return registry.model_version(self.detector_id, self._read_pointer(project))
        return self.version_of(slot or self.slot(project))

    def version_of(self, slot: ClassifierSlot) -> str:
        return registry.model_version(self.detector_id, slot.version)

    def slot(self, project: str | None) -> ClassifierSlot:
        """The project's current slot, loading its classifier on first use."""
        if project is None:
            return NO_CLASSIFIER
        slot = self._slots.get(project)
        return slot if slot is not None else self.refresh(project)

    def refresh(self, project: str) -> ClassifierSlot:
        """Re-read the project's pointer and swap in its bundle if it changed (blocking while loading)."""
        with self._load_lock:
            pointer = self._read_pointer(project)
            current = self._slots.get(project)
            if current is not None and current.pointer == pointer:
                return current
            slot = ClassifierSlot(pointer, self._load(project, pointer, current))
            self._slots[project] = slot
        if current is None or current.version != slot.version:
            if self._on_swap is not None:
                self._on_swap(project)
            logger.info("project %s now serves %s", project, self.version_of(slot))
        return slot

    def projects(self) -> list[str]:
        """The projects loaded in this process."""
        return list(self._slots)

    def _read_pointer(self, project: str) -> str | None:
        try:
            return registry.read_current(self.models_dir, project)
        except BundleError as exc:
            logger.warning("project %s has no usable model pointer: %s", project, exc)
            return None

    def _load(self, project: str, version: str | None, current: ClassifierSlot | None) -> SpeciesClassifier | None:
        if not version:
            return None
        try:
            return SpeciesClassifier.load(bundle_dir(self.models_dir, project, version), self.device)
        except Exception as exc:  # BundleError, or whatever a corrupt weights file raises (SafetensorError...)
            kept = current.classifier if current is not None else None
            logger.error(
                "cannot load classifier %s of project %s (%s); still serving %s",
                version,
                project,
                exc,
                kept.version if kept else "boxes only",
            )
            return kept
