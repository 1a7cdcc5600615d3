"""Throughput of ``/predict`` against the raw ``megadetector`` batch API, on the same photos and model.

(a) this process loads the model with ``megadetector``'s loader, reads the photos with its
    ``load_image`` and runs ``generate_detections_one_batch`` in batches of ``--batch-size``;
(b) ``camtrap serve`` (one uvicorn worker, the same model and batch size) answers one ``/predict``
    with the same photos as tasks, downloaded from a fake Label Studio on loopback.

Both run one inference process with torch's default thread count; each is warmed up on another
photo first, then (a) and (b) alternate for ``--rounds`` rounds; the figure is the median of the
per-round ratios (the machine may be shared: alternating spreads background load over both, and the
median is not moved by one lucky round). The detection store is emptied before every ``/predict``,
so (b) runs the detector on every photo as (a) does. The model is a
random-weight YOLOv5x6 at 1280 px with 3 classes (MDv5a's architecture), generated once into
``.cache/bench-models/``. Usage::

    .venv/bin/python -m bench.predict_throughput --images 4 --rounds 3
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import torch

from backend.config import Settings
from backend.service.server import local_redis
from backend.vision.thread_env import thread_env_kept
from tests.backend.fake_ls import LEGACY_TOKEN, FakeLabelStudio, serve_in_thread
from tests.conftest import DEFAULT_IMAGES, REPO_ROOT
from tests.model_factory import MDV5A_ARCH, make_yolov5_checkpoint
from tests.processes import free_port

logger = logging.getLogger("bench.predict_throughput")

#: Where the generated MDv5a-architecture checkpoint is kept between runs.
DEFAULT_MODEL = REPO_ROOT / ".cache" / "bench-models" / "md_v5a_arch_random_busy.pt"
#: Seconds to wait for ``camtrap serve`` to load the model and answer /health.
SERVE_START_TIMEOUT_S = 300


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Compare /predict with the raw megadetector batch API.", add_help=add_help
    )
    parser.add_argument("--images", type=int, default=8, help="photos to process (default: 8)")
    parser.add_argument("--batch-size", type=int, default=8, help="detector batch size in both runs (default: 8)")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES, help=f"photos (default: {DEFAULT_IMAGES})")
    parser.add_argument("--rounds", type=int, default=3, help="alternating (a)/(b) rounds (default: 3)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"checkpoint (default: {DEFAULT_MODEL})")
    return parser


def ensure_model(path: Path) -> Path:
    if not path.is_file():
        logger.info("generating a random YOLOv5x6 checkpoint at %s (once)", path)
        make_yolov5_checkpoint(path, **MDV5A_ARCH)
    return path


class RawDetector:
    """(a): megadetector's loader, its ``load_image`` and its batch API, in this process."""

    def __init__(self, model: Path) -> None:
        from megadetector.detection.run_detector import load_detector

        # yolov5's import sets OMP_NUM_THREADS=cpu_count-1 in os.environ; (b)'s server inherits this
        # process's environment and would run torch on one core fewer than (a) (the 0.62 of issue 13).
        with thread_env_kept():
            self.detector = load_detector(str(model))

    def run(self, photos: list[Path], batch_size: int) -> float:
        """Seconds to read and detect ``photos`` in batches of ``batch_size``."""
        from megadetector.visualization.visualization_utils import load_image

        started = time.perf_counter()
        with torch.inference_mode():  # as backend.vision.detector does; megadetector alone keeps autograd on
            for start in range(0, len(photos), batch_size):
                batch = photos[start : start + batch_size]
                images = [load_image(str(p)) for p in batch]
                results = self.detector.generate_detections_one_batch(
                    images, image_id=[p.name for p in batch], detection_threshold=0.01
                )
                failures = [r["file"] for r in results if r.get("failure")]
                if failures:
                    raise RuntimeError(f"raw run failed on {failures}")
        return time.perf_counter() - started


@contextmanager
def served(model: Path, batch_size: int, image_dir: Path) -> Iterator[tuple[str, Path]]:
    """(b): ``camtrap serve`` (one worker) with a fake Label Studio and a private Redis; yields its URL and DATA_DIR."""
    fake = FakeLabelStudio(image_dir)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="camtrap-bench-") as data_dir, serve_in_thread(fake.app()) as ls_url:
        redis_url = f"redis://127.0.0.1:{free_port()}/0"
        env = {
            **os.environ,
            "DETECTOR_MODEL": str(model),
            "DETECTOR_BATCH_SIZE": str(batch_size),
            "DATA_DIR": data_dir,
            "REDIS_URL": redis_url,
            "LABEL_STUDIO_URL": ls_url,
            "LABEL_STUDIO_API_KEY": LEGACY_TOKEN,
            "PORT": str(port),
            "WORKERS": "1",
            "LOG_LEVEL": "WARNING",
        }
        with local_redis(Settings(data_dir=Path(data_dir)), url=redis_url):
            server = subprocess.Popen(
                [sys.executable, "-m", "backend.cli", "serve"], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL
            )
            try:
                url = f"http://127.0.0.1:{port}"
                _wait_healthy(url, server)
                yield url, Path(data_dir)
            finally:
                server.terminate()
                server.wait(30)


def predict(url: str, photos: list[Path], round_id: int) -> float:
    """Seconds for one ``/predict`` of ``photos`` (fresh references: nothing comes from the image cache)."""
    config = (REPO_ROOT / "label_config.xml").read_text()
    tasks = [{"id": i, "data": {"image": f"/data/upload/1/{p.name}?round={round_id}"}} for i, p in enumerate(photos)]
    started = time.perf_counter()
    response = httpx.post(f"{url}/predict", json={"tasks": tasks, "project": "1", "label_config": config}, timeout=3600)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    empty = [p.name for p, r in zip(photos, response.json()["results"], strict=True) if not r["result"]]
    if empty:
        raise RuntimeError(f"/predict returned empty results for {empty}")
    return elapsed


def _wait_healthy(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"camtrap serve exited with status {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"camtrap serve did not answer /health within {SERVE_START_TIMEOUT_S} s")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    available = sorted(args.image_dir.glob("*.jpg"))
    if len(available) < args.images + 1:
        raise SystemExit(f"{args.image_dir} has {len(available)} photos; --images {args.images} needs one more")
    warmup, photos = available[0], available[1 : args.images + 1]
    model = ensure_model(args.model)
    raw = RawDetector(model)
    raw.run([warmup], args.batch_size)
    raw_s, served_s = [], []
    with served(model, args.batch_size, args.image_dir) as (url, data_dir):
        predict(url, [warmup], round_id=-1)
        for round_id in range(args.rounds):  # alternate, so background load hits both alike
            raw_s.append(raw.run(photos, args.batch_size))
            shutil.rmtree(data_dir / "detections", ignore_errors=True)  # (b) must detect, not read the store
            served_s.append(predict(url, photos, round_id))
            logger.warning("round %d: (a) %.1f s, (b) %.1f s", round_id + 1, raw_s[-1], served_s[-1])
    ratios = [a / b for a, b in zip(raw_s, served_s, strict=True)]
    raw_rate, served_rate = len(photos) / statistics.median(raw_s), len(photos) / statistics.median(served_s)
    sys.stdout.write(
        f"model: {model.name} (YOLOv5x6, 1280 px, 3 classes, random weights); {len(photos)} photos, "
        f"batch {args.batch_size}, {args.rounds} alternating rounds, torch threads "
        f"{torch.get_num_threads()}, one inference process each\n"
        f"(a) megadetector batch API: {raw_rate:.4f} images/s "
        f"(median; rounds: {', '.join(f'{t:.1f}' for t in raw_s)} s)\n"
        f"(b) /predict over HTTP:     {served_rate:.4f} images/s "
        f"(median; rounds: {', '.join(f'{t:.1f}' for t in served_s)} s)\n"
        f"ratio b/a: median of per-round ratios {statistics.median(ratios):.3f} "
        f"(per round: {', '.join(f'{r:.3f}' for r in ratios)})\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
