"""Re-label push rate into a real Label Studio vs the bulk endpoint's own rate, in the same run.

A real Label Studio 1.23.2 (``scripts/install_label_studio.sh``'s venv, started as the e2e suite starts it:
``tests/e2e/conftest.py``), one project from ``label_config.xml`` with ``--tasks`` tasks: the shared ENA24
photos uploaded once, then JSON tasks pointing at those uploads (duplicated) up to the count. Each round
pushes one prediction per task (3 animal boxes with a species each, the image-level choice: what the
backend's ``ls_prediction`` makes, valid for the config) twice, each under its own ``model_version``:

(a) ``bulk``: the pre-made predictions straight to ``POST /api/projects/{id}/import/predictions`` in chunks of
    ``--chunk`` from a bare ``httpx`` client, as fast as it goes: the endpoint's own rate;
(b) ``relabel``: the same predictions through ``trainer.relabel.push``, the re-label job's push path (its
    ``LabelStudioClient``, chunks of ``PUSH_CHUNK``, the ``created`` check).

The two alternate order each round (the table grows), after one untimed call of each. Printed: predictions/s
of each per round and the median of the per-round ratios (b)/(a) (target >= 0.8). No detector or classifier
runs: the job's work before the push is measured by ``bench.relabel``. Usage::

    .venv/bin/python -m bench.relabel_push --tasks 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from backend.config import Settings
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.label_config import parse_label_config
from backend.labelstudio.predictions import ls_prediction
from backend.vision.classifier import Prediction
from backend.vision.detector import Detection
from backend.vision.pipeline import Box
from backend.vision.thresholds import Thresholds
from tests.conftest import DEFAULT_IMAGES
from tests.e2e import lsapi
from tests.e2e.conftest import install_label_studio, run_label_studio
from tests.e2e.flows import LABEL_CONFIG
from trainer.relabel import PUSH_CHUNK, push

#: JSON tasks per import call when filling the project.
IMPORT_CHUNK = 1000


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Re-label push vs the bulk endpoint, real LS.", add_help=add_help)
    parser.add_argument("--tasks", type=int, default=1000, help="tasks in the project (default: 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, median ratio reported (default: 3)")
    parser.add_argument("--chunk", type=int, default=PUSH_CHUNK, help=f"(a)'s chunk (default: {PUSH_CHUNK})")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES, help=f"photos (default: {DEFAULT_IMAGES})")
    return parser


def fill_project(api: lsapi.LabelStudioAPI, photos: list[Path], tasks: int) -> tuple[int, list[int]]:
    """A project from label_config.xml with ``tasks`` tasks showing ``photos`` (uploaded once); its task ids."""
    project = api.create_project("Re-label push bench", LABEL_CONFIG.read_text())["id"]
    api.import_images(project, photos)
    urls = [t["data"]["image"] for t in api.tasks(project)]
    extra = [{"image": urls[i % len(urls)]} for i in range(max(0, tasks - len(urls)))]
    for start in range(0, len(extra), IMPORT_CHUNK):
        lsapi.check(api.client.post(f"/api/projects/{project}/import", json=extra[start : start + IMPORT_CHUNK]), 201)
    return project, sorted(t["id"] for t in api.tasks(project))[:tasks]


def premade(task_ids: list[int], version: str, size: tuple[int, int]) -> list[dict[str, Any]]:
    """One prediction per task as the backend makes it: 3 animal boxes, each with a species, the image verdict."""
    mapping = parse_label_config(LABEL_CONFIG.read_text())
    thresholds = Thresholds.from_settings(Settings())
    species = sorted(set(mapping.species_values.values()))
    out = []
    for task_id in task_ids:
        boxes = [
            Box(
                Detection("1", 0.9 - 0.1 * i, (0.1 + 0.25 * i, 0.2, 0.2, 0.3)),
                Prediction(species[(task_id + i) % len(species)], 0.5 + 0.1 * i),
            )
            for i in range(3)
        ]
        prediction = ls_prediction(boxes, mapping, size[0], size[1], version, thresholds)
        out.append({"task": task_id, **prediction})
    return out


def bulk(client: httpx.Client, project: int, predictions: list[dict[str, Any]], chunk: int) -> float:
    """(a): seconds to import ``predictions`` through the bulk endpoint from a bare client."""
    started = time.perf_counter()
    for start in range(0, len(predictions), chunk):
        part = predictions[start : start + chunk]
        created = lsapi.check(client.post(f"/api/projects/{project}/import/predictions", json=part), 201).json()
        assert created.get("created") == len(part), f"bulk import created {created} of {len(part)}"
    return time.perf_counter() - started


def relabel_push(client: LabelStudioClient, project: int, predictions: list[dict[str, Any]]) -> float:
    """(b): seconds for the re-label job's push of ``predictions``."""
    started = time.perf_counter()
    assert push(client, str(project), predictions) == len(predictions)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    photos = sorted(args.image_dir.glob("*.jpg"))
    with Image.open(photos[0]) as image:
        size = image.size
    install = install_label_studio()
    with tempfile.TemporaryDirectory() as tmp, run_label_studio(install, Path(tmp)) as ls:
        with ls.login() as session:
            token = lsapi.create_personal_access_token(session)
        auth = lsapi.PersonalAccessTokenAuth(ls.url, token)
        with httpx.Client(base_url=ls.url, auth=auth, timeout=lsapi.REQUEST_TIMEOUT_S) as client:
            api = lsapi.LabelStudioAPI(client)
            project, task_ids = fill_project(api, photos, args.tasks)
            settings = Settings(label_studio_url=ls.url, label_studio_api_key=token, data_dir=Path(tmp) / "data")
            job_client = LabelStudioClient(settings, url=ls.url)
            print(f"Label Studio {install.version}, {len(task_ids)} tasks, 3 boxes per prediction")  # noqa: T201
            # Warm-up (first-request costs of both paths: Django's lazy imports, the token exchange), not timed.
            bulk(client, project, premade(task_ids[:1], "warm-up-a", size), args.chunk)
            relabel_push(job_client, project, premade(task_ids[:1], "warm-up-b", size))
            ratios = []
            try:
                for round_ in range(args.rounds):
                    a_preds = premade(task_ids, f"bulk-{round_}", size)
                    b_preds = premade(task_ids, f"relabel-{round_}", size)
                    if round_ % 2 == 0:
                        a_s = bulk(client, project, a_preds, args.chunk)
                        b_s = relabel_push(job_client, project, b_preds)
                    else:
                        b_s = relabel_push(job_client, project, b_preds)
                        a_s = bulk(client, project, a_preds, args.chunk)
                    a_rate, b_rate = len(a_preds) / a_s, len(b_preds) / b_s
                    ratios.append(b_rate / a_rate)
                    print(  # noqa: T201 - the benchmark's output
                        f"round {round_}: (a) bulk endpoint {a_rate:.1f} predictions/s (chunks of {args.chunk}), "
                        f"(b) re-label push {b_rate:.1f} predictions/s (chunks of {PUSH_CHUNK}): "
                        f"ratio {b_rate / a_rate:.3f}"
                    )
            finally:
                job_client.close()
    print(  # noqa: T201
        f"ratio b/a: median of per-round ratios {statistics.median(ratios):.3f} "
        f"(per round: {', '.join(f'{r:.3f}' for r in ratios)}; target >= 0.8)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
