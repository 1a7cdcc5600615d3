"""``/predict`` of tasks whose detections are stored: per-task latency, p50 and p99 (target p99 < 100 ms).

``camtrap serve`` (one uvicorn worker, ``bench.predict_throughput.served``: a fake Label Studio serving the
shared ENA24 photos, a private Redis), the detection store filled by one ``/predict`` per photo, then
``--calls`` single-task ``/predict`` calls of those photos, round robin, timed from the client. Two cases:

- ``cached``: the same image reference as the fill, so the backend's image cache holds the file (no download;
  the bytes are read from the cache and hashed for the store key);
- ``download``: a fresh reference each call (``?call=N``), so the image is downloaded from Label Studio again
  (loopback) before the store answers.

With ``--classifier`` a trained bundle is served for the project first, so every animal box at or above
the classify threshold is cropped and classified (the detector never runs either way). The detector that
fills the store is ``--model`` (default MegadetectorLite, ``camtrap fetch mdlite``: real boxes). Usage::

    .venv/bin/python -m bench.predict_stored --calls 200
    .venv/bin/python -m bench.predict_stored --calls 200 --classifier
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx

from backend.config import Settings
from bench.predict_throughput import served
from tests.backend.bundles import write_bundle
from tests.conftest import DEFAULT_IMAGES, REPO_ROOT

PROJECT = "1"
VERSION = "p1-stored-bench"
SWAP_TIMEOUT_S = 60.0


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="/predict of stored tasks: per-task p50/p99.", add_help=add_help)
    parser.add_argument("--calls", type=int, default=200, help="timed single-task calls per case (default: 200)")
    parser.add_argument("--images", type=int, default=21, help="photos stored and cycled through (default: 21)")
    parser.add_argument("--classifier", action="store_true", help="serve a classifier bundle (crops classified)")
    parser.add_argument("--model", default="mdlite", help="DETECTOR_MODEL that fills the store (default: mdlite)")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES, help=f"photos (default: {DEFAULT_IMAGES})")
    return parser


def predict_one(client: httpx.Client, photo: Path, task_id: int, suffix: str, config: str) -> tuple[float, dict]:
    """Seconds for one single-task ``/predict`` and its result."""
    task = {"id": task_id, "data": {"image": f"/data/upload/1/{photo.name}{suffix}"}}
    started = time.perf_counter()
    response = client.post("/predict", json={"tasks": [task], "project": PROJECT, "label_config": config})
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response.json()["results"][0]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def stage_seconds(client: httpx.Client) -> dict[str, tuple[float, float]]:
    """``camtrap_stage_seconds`` per stage: (sum of seconds, count of batches), from ``/metrics``."""
    out: dict[str, list[float]] = {}
    for line in client.get("/metrics").text.splitlines():
        for field, index in (("_sum{", 0), ("_count{", 1)):
            if line.startswith(f"camtrap_stage_seconds{field}"):
                stage = line.split('stage="', 1)[1].split('"', 1)[0]
                out.setdefault(stage, [0.0, 0.0])[index] += float(line.split()[-1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def detector_images(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("camtrap_detector_images_total")
    )


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    photos = sorted(args.image_dir.glob("*.jpg"))[: args.images]
    config = (REPO_ROOT / "label_config.xml").read_text()
    with (
        served(Path(args.model), 8, args.image_dir) as (url, data_dir),
        httpx.Client(base_url=url, timeout=600) as client,
    ):
        if args.classifier:
            settings = Settings(data_dir=data_dir)
            write_bundle(
                settings.models_dir, PROJECT, VERSION, favourite="animal", labels=["animal", "other"], serve=True
            )
            _wait_for_version(client, config)
        started = time.perf_counter()
        for i, photo in enumerate(photos):
            predict_one(client, photo, i, "", config)
        fill_s = time.perf_counter() - started
        detected = detector_images(client)
        print(  # noqa: T201 - the benchmark's output
            f"store filled: {len(photos)} photos in {fill_s:.1f} s ({args.model}); "
            f"classifier: {VERSION if args.classifier else 'none'}"
        )
        for case, suffix in (("cached", ""), ("download", "?call={n}")):
            times, boxes = [], 0
            stages_before = stage_seconds(client)
            for n in range(args.calls):
                photo = photos[n % len(photos)]
                elapsed, result = predict_one(client, photo, n, suffix.format(n=n), config)
                times.append(elapsed)
                boxes += sum(1 for r in result["result"] if r["type"] == "rectanglelabels")
            print(  # noqa: T201
                f"{case}: {args.calls} single-task /predict calls of stored photos: "
                f"p50 {1000 * statistics.median(times):.1f} ms, p99 {1000 * percentile(times, 0.99):.1f} ms, "
                f"max {1000 * max(times):.1f} ms ({boxes / args.calls:.1f} boxes per task; target p99 < 100 ms)"
            )
            stages = {
                stage: (
                    total - stages_before.get(stage, (0.0, 0.0))[0],
                    count - stages_before.get(stage, (0.0, 0.0))[1],
                )
                for stage, (total, count) in stage_seconds(client).items()
            }
            print(  # noqa: T201
                "  mean per call by stage: "
                + ", ".join(
                    f"{stage} {1000 * total / args.calls:.1f} ms" for stage, (total, _) in sorted(stages.items())
                )
            )
        ran = detector_images(client) - detected
        print(f"detector images during the timed calls: {ran:.0f}")  # noqa: T201
    return 0


def _wait_for_version(client: httpx.Client, config: str) -> None:
    deadline = time.monotonic() + SWAP_TIMEOUT_S
    while time.monotonic() < deadline:
        version = client.post("/setup", json={"project": f"{PROJECT}.0", "schema": config}).json()["model_version"]
        if version.endswith(VERSION):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the backend did not serve {VERSION} within {SWAP_TIMEOUT_S:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
