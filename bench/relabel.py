"""Re-label after a promotion (stored detections) vs full re-prediction; pre-annotation on 1 vs 2 RQ workers.

(a) ``relabel``: the ``relabel-<project>`` job body (``trainer.relabel.relabel``) over ``--tasks`` unannotated
tasks of a fake Label Studio (the shared ENA24 photos), twice per round in this process: first with an
empty detection store (a full re-prediction: the detector runs on every photo), then again with the store
it filled (the re-label: only the crops are classified). Both include the model loads and the bulk push.
Printed: seconds of each, and their ratio (target <= 0.05), median over ``--rounds``.

(b) ``workers``: ``--tasks`` task ids enqueued in chunks of ``--chunk`` on queue ``prelabel``, run by 1 then
by 2 ``python -m trainer worker`` processes (``OMP_NUM_THREADS=1``: one torch thread each), against a
private Redis. Printed: seconds from enqueue to the last chunk finished, and the speed-up (target >= 1.7).

The detector is the MDv5a-size random-weight YOLOv5x6 at 1280 (``tests/model_factory.py``), on CPU. Usage::

    .venv/bin/python -m bench.relabel --part relabel --tasks 4 --rounds 2
    .venv/bin/python -m bench.relabel --part workers --tasks 8 --chunk 2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from backend.config import Settings
from backend.contracts.label_jobs import enqueue_prelabel
from bench.predict_throughput import DEFAULT_MODEL, ensure_model
from tests.backend.bundles import write_bundle
from tests.backend.fake_ls import serve_in_thread
from tests.conftest import DEFAULT_IMAGES
from tests.processes import RedisServer, wait_until
from tests.trainer.fake_label_studio import TOKEN, FakeProject, ena24_project, label_config
from trainer.progress import Progress
from trainer.relabel import relabel

logger = logging.getLogger("bench.relabel")

PROJECT = "1"
VERSION = "p1-bench"
#: The version promoted before the re-label.
NEXT_VERSION = "p2-bench"
LABELS = ["animal", "other"]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Re-label vs full re-prediction; 1 vs 2 workers.", add_help=add_help)
    parser.add_argument("--part", choices=("relabel", "workers", "both"), default="both")
    parser.add_argument("--tasks", type=int, default=4, help="unannotated tasks (default: 4)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (a), median reported (default: 2)")
    parser.add_argument("--chunk", type=int, default=2, help="PRELABEL_CHUNK_SIZE of (b) (default: 2)")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES, help=f"photos (default: {DEFAULT_IMAGES})")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"checkpoint (default: {DEFAULT_MODEL})")
    return parser


def _project(image_dir: Path, tasks: int) -> FakeProject:
    names = sorted(p.name for p in image_dir.glob("*.jpg"))[:tasks]
    fake = ena24_project(image_dir, {name: "animal" for name in names}, project=int(PROJECT))
    for task in fake.tasks:
        task["annotations"] = []
    return fake


def _settings(data_dir: Path, model: Path, ls_url: str, **extra: object) -> Settings:
    settings = Settings(
        data_dir=data_dir, detector_model=str(model), label_studio_url=ls_url, label_studio_api_key=TOKEN, **extra
    )
    write_bundle(settings.models_dir, PROJECT, VERSION, favourite="animal", labels=LABELS, serve=True)
    return settings


def bench_relabel(args: argparse.Namespace, model: Path) -> None:
    ratios, fulls, relabels = [], [], []
    crops = 0
    for round_ in range(args.rounds):
        fake = _project(args.image_dir, args.tasks)
        with serve_in_thread(fake.app()) as url, tempfile.TemporaryDirectory() as tmp:
            settings = _settings(Path(tmp), model, url)
            started = time.perf_counter()
            full = relabel(PROJECT, settings=settings, connection=None, progress=Progress(None))
            full_s = time.perf_counter() - started
            # A promotion: a new classifier version, so every task gets a prediction again (a task that
            # already holds the served version is skipped).
            write_bundle(settings.models_dir, PROJECT, NEXT_VERSION, favourite="other", labels=LABELS, serve=True)
            started = time.perf_counter()
            again = relabel(PROJECT, settings=settings, connection=None, progress=Progress(None))
            relabel_s = time.perf_counter() - started
        assert full["detected"] == args.tasks and again["detected"] == 0, (full, again)
        assert again["pushed"] == full["pushed"] and again["crops"] == full["crops"], (full, again)
        ratio = relabel_s / full_s
        logger.info(
            "round %d: full %.2f s (%d detected, %d crops), relabel %.2f s (%d crops, 0 detected), ratio %.3f",
            round_ + 1, full_s, full["detected"], full["crops"], relabel_s, again["crops"], ratio,
        )  # fmt: skip
        ratios.append(ratio)
        crops = again["crops"]
        fulls.append(full_s)
        relabels.append(relabel_s)
    sys.stdout.write(
        f"relabel: {args.tasks} tasks ({crops} crops classified in each run), "
        f"full re-prediction {statistics.median(fulls):.2f} s, "
        f"re-label from the store {statistics.median(relabels):.2f} s, "
        f"ratio {statistics.median(ratios):.3f} (median of {args.rounds} rounds; target <= 0.05)\n"
    )


def _run_workers(args: argparse.Namespace, model: Path, workers: int) -> float:
    import json

    from tests.learning.services import service_env, start_rq_worker

    fake = _project(args.image_dir, args.tasks)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_in_thread(fake.app()) as url,
    ):
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            import redis

            connection = redis.Redis.from_url(server.url)
            settings = _settings(Path(tmp) / "data", model, url, redis_url=server.url, prelabel_chunk_size=args.chunk)
            connection.hset(
                f"camtrap:project:{PROJECT}:setup",
                mapping={"schema": label_config(LABELS), "extra_params": json.dumps({})},
            )
            env = service_env(server.url, settings.data_dir, model, url, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            started_workers = [start_rq_worker(env, Path(tmp) / f"w{i}.log", connection) for i in range(workers)]
            try:
                ids = [t["id"] for t in fake.tasks]
                started = time.perf_counter()
                jobs = enqueue_prelabel(connection, settings, PROJECT, ids, trigger="bench")
                from rq.job import Job

                def done() -> bool:
                    states = [Job.fetch(j, connection=connection).get_status() for j in jobs]
                    if any(s == "failed" for s in states):
                        raise RuntimeError(f"a chunk failed: {states}")
                    return all(s == "finished" for s in states)

                wait_until(done, timeout=3000, what="the chunks", interval=0.1, errors="raise")
                return time.perf_counter() - started
            finally:
                for worker in started_workers:
                    worker.stop()
        finally:
            server.stop()


def bench_workers(args: argparse.Namespace, model: Path) -> None:
    one = _run_workers(args, model, 1)
    logger.info("1 worker: %.2f s", one)
    two = _run_workers(args, model, 2)
    logger.info("2 workers: %.2f s", two)
    sys.stdout.write(
        f"workers: {args.tasks} tasks in chunks of {args.chunk}, 1 worker {one:.2f} s, 2 workers {two:.2f} s, "
        f"speed-up {one / two:.2f}x (target >= 1.7)\n"
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = get_args_parser().parse_args(argv)
    model = ensure_model(args.model)
    if args.part in ("relabel", "both"):
        bench_relabel(args, model)
    if args.part in ("workers", "both"):
        bench_workers(args, model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
