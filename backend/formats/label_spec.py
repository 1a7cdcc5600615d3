"""Label translations: ``label_spec.json`` (MegaDetector classification pipeline, TrapTagger) and ``label_index.json``.

A label spec maps each **training label** to the dataset labels it gathers
(``../shared/docs/user-formats.md`` §5.1, §5.3)::

    {"cervid": {"dataset_labels": {"survey_a": ["deer", "elk"]}, "max_count": 5000},
     "bird":   {"taxa": [{"level": "class", "name": "aves"}],
                "exclude": {"dataset_labels": {"survey_a": ["turkey"]}}}}

TrapTagger writes the same syntax with ``dataset_labels`` only, every dataset present, empty lists allowed.
How this module applies it (:meth:`LabelSpec.translate`, :meth:`LabelSpec.select`):

- a dataset label is matched case-insensitively, surrounding spaces ignored (TrapTagger lower-cases);
- the datasets of a spec are pooled: our files come from one dataset, so a label listed under any dataset
  counts (``prioritize``, which ranks datasets, is accepted and has nothing to rank);
- ``taxa`` are matched by ``name`` against the dataset label (there is no taxonomy to walk here), so
  ``{"level": "species", "name": "red fox"}`` gathers the label ``Red fox``;
- ``exclude`` removes labels from that training label; a label no training label gathers is dropped;
- ``max_count`` caps the number of images of a training label (a seeded random choice of which to keep);
- a dataset label gathered by two training labels is an error (MegaDetector's ``json_validator`` refuses it
  unless ``--allow-multilabel``).

``label_index.json`` is ``{"0": "label", ...}``; readers build ``[d[str(i)] for i in range(n)]`` and never
assume it is sorted (TrapTagger keeps the form's order, MegaDetector sorts).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.errors import FileFormatError
from backend.formats.atomic import write_json_atomically

#: Keys a training label's entry may hold.
ENTRY_KEYS = frozenset({"taxa", "dataset_labels", "max_count", "prioritize", "exclude"})


def normalize(label: str) -> str:
    """How dataset labels are compared: stripped and case-folded."""
    return " ".join(str(label).split()).casefold()


@dataclass(frozen=True)
class LabelRule:
    """What one training label gathers."""

    label: str
    gathers: frozenset[str]
    """Normalized dataset labels (from ``dataset_labels`` and ``taxa`` names)."""
    excludes: frozenset[str] = frozenset()
    max_count: int | None = None


@dataclass(frozen=True)
class LabelSpec:
    """A parsed label spec: training labels in file order, and which dataset label goes to which."""

    source: str
    rules: tuple[LabelRule, ...]
    _by_label: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        owners: dict[str, str] = {}
        for rule in self.rules:
            for label in sorted(rule.gathers - rule.excludes):
                if label in owners and owners[label] != rule.label:
                    raise FileFormatError(
                        f"{self.source}: the dataset label {label!r} is gathered by both {owners[label]!r} and "
                        f"{rule.label!r}; a dataset label may go to one training label only"
                    )
                owners[label] = rule.label
        self._by_label.update(owners)

    @property
    def labels(self) -> list[str]:
        """The training labels, in the file's order (the order of ``label_index.json`` for TrapTagger)."""
        return [rule.label for rule in self.rules]

    def translate(self, label: str) -> str | None:
        """The training label a dataset label goes to, or None (excluded or gathered by none)."""
        return self._by_label.get(normalize(label))

    def select(self, labels: Sequence[str], *, seed: int = 0) -> list[str | None]:
        """Translate one label per image and apply ``max_count``: per image its training label, or None.

        Which images of an over-full label are kept is a seeded random choice (same seed, same images).
        """
        return self.cap([self.translate(label) for label in labels], seed=seed)

    def cap(self, labels: Sequence[str | None], *, seed: int = 0) -> list[str | None]:
        """Apply ``max_count`` to training labels (one per image): the over-full ones beyond it become None."""
        translated = list(labels)
        caps = {rule.label: rule.max_count for rule in self.rules if rule.max_count is not None}
        by_label: dict[str, list[int]] = defaultdict(list)
        for index, label in enumerate(translated):
            if label is not None and label in caps:
                by_label[label].append(index)
        for label, indices in by_label.items():
            cap = caps[label] or 0
            if len(indices) > cap:
                keep = set(random.Random(f"{seed}:{label}").sample(indices, cap))
                for index in indices:
                    if index not in keep:
                        translated[index] = None
        return translated

    def drop_reason(self, label: str) -> str:
        """Why :meth:`translate` gives None for ``label``: ``excluded`` or ``not_in_label_spec``."""
        key = normalize(label)
        if any(key in rule.excludes for rule in self.rules):
            return "excluded"
        return "not_in_label_spec"


def read_label_spec(path: Path) -> LabelSpec:
    """Read a ``label_spec.json`` (MegaDetector or TrapTagger flavour).

    Raises:
        FileFormatError: not JSON, or an entry is not in the spec's syntax (the message names the file, the
            line or the training label, and what was expected).
    """
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise FileFormatError(f"cannot read the label spec {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path} is not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    return parse_label_spec(value, str(path))


def parse_label_spec(value: Any, source: str) -> LabelSpec:
    """A label spec already loaded from JSON (a file, or a project's extra params).

    Raises:
        FileFormatError: ``value`` is not in the spec's syntax.
    """
    if not isinstance(value, Mapping) or not value:
        raise FileFormatError(
            f'{source}: expected a label spec, a JSON object {{"training label": {{"dataset_labels": ...}}}}'
        )
    rules = []
    for label, entry in value.items():
        where = f"{source}: training label {label!r}"
        if not isinstance(entry, Mapping):
            raise FileFormatError(f"{where}: expected an object with dataset_labels and/or taxa")
        unknown = sorted(set(entry) - ENTRY_KEYS)
        if unknown:
            raise FileFormatError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(ENTRY_KEYS)}")
        gathers = _dataset_labels(entry.get("dataset_labels"), where) | _taxa(entry.get("taxa"), where)
        exclude = entry.get("exclude") or {}
        if not isinstance(exclude, Mapping):
            raise FileFormatError(f"{where}: exclude must be an object with dataset_labels and/or taxa")
        excludes = _dataset_labels(exclude.get("dataset_labels"), f"{where}, exclude") | _taxa(
            exclude.get("taxa"), f"{where}, exclude"
        )
        max_count = entry.get("max_count")
        if max_count is not None and (not isinstance(max_count, int) or isinstance(max_count, bool) or max_count < 0):
            raise FileFormatError(f"{where}: max_count must be a non-negative integer, got {max_count!r}")
        if "prioritize" in entry and max_count is None:
            raise FileFormatError(f"{where}: prioritize is only valid together with max_count")
        rules.append(LabelRule(str(label), frozenset(gathers), frozenset(excludes), max_count))
    return LabelSpec(source, tuple(rules))


def _dataset_labels(value: Any, where: str) -> set[str]:
    if value is None:
        return set()
    if not isinstance(value, Mapping) or not all(
        isinstance(labels, list) and all(isinstance(x, str) for x in labels) for labels in value.values()
    ):
        raise FileFormatError(f"{where}: dataset_labels must map dataset names to lists of labels")
    return {normalize(x) for labels in value.values() for x in labels if x.strip()}


def _taxa(value: Any, where: str) -> set[str]:
    if value is None:
        return set()
    if not isinstance(value, list) or not all(isinstance(t, Mapping) and isinstance(t.get("name"), str) for t in value):
        raise FileFormatError(f'{where}: taxa must be a list of {{"level": ..., "name": ...}} objects')
    return {normalize(t["name"]) for t in value if t["name"].strip()}


def label_index(labels: Sequence[str]) -> dict[str, str]:
    """``{"0": label, ...}`` in class-index order."""
    return {str(i): label for i, label in enumerate(labels)}


def write_label_index(path: Path, labels: Sequence[str]) -> Path:
    """Write ``label_index.json`` (indent 1, as MegaDetector and comvis write theirs), atomically."""
    return write_json_atomically(path, label_index(labels), indent=1)


def read_label_index(path: Path) -> list[str]:
    """Class index -> label from a ``label_index.json`` (or ``label_correspondance.json``).

    Raises:
        FileFormatError: not ``{"0": name, ...}`` with keys 0..n-1.
    """
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise FileFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{path}: not a JSON label index ({exc})") from exc
    if not isinstance(value, dict) or not value:
        raise FileFormatError(f'{path}: expected {{"0": "label", "1": ...}}')
    try:
        return [str(value[str(i)]) for i in range(len(value))]
    except KeyError as exc:
        raise FileFormatError(
            f'{path}: key {exc.args[0]} is missing; expected the keys "0" to "{len(value) - 1}"'
        ) from exc
