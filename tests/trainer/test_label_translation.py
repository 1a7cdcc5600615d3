"""A Label Studio project's label spec, applied by the training job's export: from DATA_DIR or the extra params."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from backend.config import Settings
from backend.contracts.keys import RedisKeys
from backend.contracts.setup_record import SetupRecord
from backend.labelstudio.client import LabelStudioClient
from tests.trainer.fake_label_studio import FakeProject
from trainer.errors import ExportError
from trainer.export import export_project
from trainer.label_translation import spec_for_project

SPEC = {
    "deer": {"dataset_labels": {"ls": ["red deer"]}, "max_count": 5},
    "bird": {"dataset_labels": {"ls": ["blue jay"]}},
}


def _export(settings: Settings, connection: redis.Redis | None) -> dict[str, int]:
    spec = spec_for_project(settings, connection, RedisKeys(settings.redis_prefix), "2")
    with LabelStudioClient(settings) as client:
        exported = export_project(client, "2", location_fields=["location"], base_url="fake", label_spec=spec)
    counts: dict[str, int] = {}
    for task in exported.tasks:
        counts[task.boxes[0].species] = counts.get(task.boxes[0].species, 0) + 1
    return {**counts, **{k: v for k, v in exported.skipped.items()}}


def test_a_spec_file_in_data_dir_translates_the_export(ls_settings: Settings) -> None:
    folder = ls_settings.data_dir / "label_specs"
    folder.mkdir(parents=True)
    (folder / "2.json").write_text(json.dumps(SPEC))
    counts = _export(ls_settings, None)
    assert counts == {"deer": 5, "bird": 12, "label_not_in_label_spec": 12, "label_over_max_count": 7}


def test_the_extra_params_name_the_spec(
    ls_settings: Settings, synthetic_ls: tuple[FakeProject, str], redis_client: redis.Redis
) -> None:
    keys = RedisKeys(ls_settings.redis_prefix)
    SetupRecord(extra_params={"label_spec": {"frog": {"dataset_labels": {"x": ["Green Frog"]}}}}).save(
        redis_client, keys, "2"
    )
    assert _export(ls_settings, redis_client) == {"frog": 12, "label_not_in_label_spec": 24}
    SetupRecord(extra_params={"label_spec": "season.json"}).save(redis_client, keys, "2")
    with pytest.raises(ExportError, match=r"label spec 'season.json', but .*label_specs/season.json does not exist"):
        _export(ls_settings, redis_client)
    (ls_settings.data_dir / "label_specs").mkdir(parents=True)
    (ls_settings.data_dir / "label_specs" / "season.json").write_text(json.dumps(SPEC))
    assert _export(ls_settings, redis_client)["bird"] == 12


def test_no_spec_changes_nothing(ls_settings: Settings, tmp_path: Path) -> None:
    assert _export(ls_settings, None) == {"Red Deer": 12, "Green Frog": 12, "Blue Jay": 12}
