"""``camtrap import-coco cct.json --images DIR --project N`` against the real Label Studio 1.23: the tasks it
creates carry human annotations, and the training job's own export reads them back as labels at once.

The project's config is label_config.xml's shape plus an image-level species ``Choices`` (two photos of the
COCO file are labelled without a box; with label_config.xml alone the command refuses them, naming the image).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from backend.config import Settings
from backend.labelstudio.client import LabelStudioClient
from tests.e2e import lsapi
from tests.e2e.conftest import LabelStudio
from tests.trainer.fake_label_studio import label_config
from tests.trainer.recipe import camtrap
from tests.trainer.test_import_coco import DEPLOYMENTS, _animl_folder
from trainer.export import export_project

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_imported_annotations_are_training_labels(
    label_studio: LabelStudio, ena24_dir: Path, ena24_labels: dict[str, str], tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    coco, images = _animl_folder(ena24_dir, ena24_labels, photos)
    species = sorted(set(ena24_labels.values()))
    with label_studio.login() as session:
        token = lsapi.create_personal_access_token(session)
    auth = lsapi.PersonalAccessTokenAuth(label_studio.url, token)
    with httpx.Client(base_url=label_studio.url, auth=auth, timeout=lsapi.REQUEST_TIMEOUT_S) as client:
        api = lsapi.LabelStudioAPI(client)
        project = api.create_project("import-coco", label_config(species))["id"]
        env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": token}
        args = ["import-coco", str(coco), "--images", str(photos), "--project", str(project), "--keep-empty"]
        done = camtrap(args, tmp_path, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout)
        tasks = api.tasks(project)
    assert report["tasks_created"] == len(tasks) == 22, "21 photos + the empty one; the missing one is listed"
    assert all(len(t["annotations"]) == 1 for t in tasks), "every task arrives with its human annotation"
    settings = Settings(label_studio_url=label_studio.url, label_studio_api_key=token)
    with LabelStudioClient(settings) as ls:
        exported = export_project(ls, str(project), location_fields=["location"], base_url=label_studio.url)
    labelled = [t for t in exported.tasks if not t.empty]
    assert len(labelled) == 21 and [t.empty for t in exported.tasks].count(True) == 1
    assert {t.location for t in labelled} == set(DEPLOYMENTS)
    assert sum(1 for t in labelled if t.boxes) == 19 and sum(1 for t in labelled if not t.boxes) == 2
    by_name = {t.image.rsplit("/", 1)[-1]: t for t in labelled}
    boxed = next(i for i in images if i.labels and i.labels[0][1] is not None and i.width)
    task = by_name[Path(boxed.file_name).name]
    assert task.boxes[0].species == boxed.labels[0][0]
    assert task.boxes[0].bbox == pytest.approx((0.1, 0.1, 0.8, 0.8), abs=1e-3)
