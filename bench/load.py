"""A labelling team's load on the real service: locust annotators and an admin, latency, failures and RSS.

Starts, on loopback only: a private ``redis-server``, the fake Label Studio (``tests/trainer/
fake_label_studio.py``'s ENA24 project: the shared photos, annotated, exportable), ``camtrap serve``
with ``WORKERS=2`` and one RQ worker (``camtrap worker``), with the tiny random-weight YOLOv5 of the
tests (``--detector mdlite`` for MegadetectorLite) and the tests' tiny training set-up, so a training
job finishes within the run. Then runs ``bench/locustfile.py`` headless in a locust *subprocess*
(locust patches the standard library with gevent: it is never imported here): ``--users`` annotators
open tasks (``/health``, ``/setup``, ``/predict`` of one task), think 1-3 s and save them (the
``ANNOTATION_CREATED`` webhook); one admin presses Start Training ``--train-at`` seconds in and
follows ``GET /jobs/train-1``. Every opened task's image is a photo the backend has not seen (a new
reference whose bytes differ by a trailer after the JPEG end marker), so each ``/predict`` downloads
it and runs the detector, as the first opening of a task does. Automatic training is off
(``TRAIN_EVERY_N_ANNOTATIONS=0``): the one job is the admin's.

Every second the RSS of each process is sampled (the uvicorn parent and its workers, the RQ worker
and its work horses, redis); the summary gives each one's RSS when the warm-up ends, once the
promoted classifier is loaded, at the end, its peak, and every 10 s. Latency percentiles are
locust's own (its ``--csv`` stats, whole run). Usage (the figures in docs/reliability.md)::

    .venv/bin/python -m bench.load --users 10 --spawn-rate 5 --time 300s --warmup 30s
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from fastapi import FastAPI, Request, Response

from tests.backend.fake_ls import serve_in_thread
from tests.conftest import DEFAULT_IMAGES, MODEL_CACHE, REPO_ROOT
from tests.learning.services import VENV_BIN, service_env, start_rq_worker
from tests.model_factory import make_yolov5_checkpoint
from tests.processes import ManagedProcess, RedisServer, free_port, wait_until
from tests.trainer.fake_label_studio import FakeProject, ena24_project

logger = logging.getLogger("bench.load")

PROJECT = "1"
JOB = f"train-{PROJECT}"
LOCUSTFILE = REPO_ROOT / "bench" / "locustfile.py"
#: Targets (issue 12, Label Studio's limits): webhook p99, /health p99, failures.
WEBHOOK_P99_MS, HEALTH_P99_MS = 100.0, 1000.0
#: Seconds to wait for ``camtrap serve``'s two workers to load the detector and answer.
SERVE_START_TIMEOUT_S = 180
#: Seconds the training job may still need after the load ends before the run gives up on it.
TRAIN_END_TIMEOUT_S = 180
ENDED = ("finished", "failed", "stopped", "canceled")
#: Seconds after the training job ends by which every backend worker has loaded the promoted classifier.
SETTLE_S = 5.0
#: Seconds between the points of the RSS series printed for the long-lived processes.
SERIES_STEP_S = 10.0
#: The locustfile's row for a webhook answered ``accepted`` (the 50 ms deadline passed; recorded after).
ANSWERED_BEFORE_RECORDED = "/webhook answered before recorded"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Locust load of a labelling team on the service.", add_help=add_help)
    parser.add_argument("--users", type=int, default=10, help="simulated annotators (default: 10); plus one admin")
    parser.add_argument("--spawn-rate", type=float, default=5.0, help="users started per second (default: 5)")
    parser.add_argument("--time", default="60s", help="locust run time, e.g. 60s or 2m (default: 60s)")
    parser.add_argument("--warmup", default="10s", help="RSS baseline taken this long into the run (default: 10s)")
    parser.add_argument("--train-at", default=None, help="admin presses Start Training at (default: the warm-up end)")
    parser.add_argument("--detector", choices=("tiny", "mdlite"), default="tiny", help="detector (default: tiny)")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES, help=f"photos (default: {DEFAULT_IMAGES})")
    parser.add_argument(
        "--skip-predict",
        action="store_true",
        help="profiling: annotators do not call /predict (what the detector's CPU share costs the other endpoints)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and locust's CSVs in this folder")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of markdown")
    return parser


def seconds(text: str) -> float:
    """``90``, ``90s``, ``2m``, ``1h`` -> seconds (locust's ``-t`` syntax, one unit)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


@dataclass
class RssSampler:
    """Samples the RSS of every process of the run once a second, in a thread (psutil)."""

    roots: dict[str, int]
    """Name -> PID of each service's leader; its descendants are sampled too."""
    interval_s: float = 1.0
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def snapshot(self) -> dict[str, int]:
        """Label -> RSS bytes now, each root's descendants under :meth:`child_label`'s labels."""
        rss: dict[str, int] = {}
        for name, pid in self.roots.items():
            try:
                root = psutil.Process(pid)
                rss[name] = root.memory_info().rss
                for child in root.children(recursive=True):
                    label = self.child_label(name, child)
                    rss[label] = rss.get(label, 0) + child.memory_info().rss
            except psutil.Error:
                continue
        return rss

    @staticmethod
    def child_label(name: str, child: psutil.Process) -> str:
        """uvicorn's workers by PID (they live the whole run); RQ's work horses as one (one per job, transient)."""
        if name == "rq worker":
            return "rq work horse"
        try:
            if "resource_tracker" in " ".join(child.cmdline()):
                return "uvicorn resource tracker"
        except psutil.Error:
            pass
        return f"uvicorn worker {child.pid}"

    def start(self) -> RssSampler:
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.samples.append((time.time(), self.snapshot()))

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def at(self, moment: float) -> dict[str, int]:
        """The sample nearest to ``moment`` (unix time)."""
        return min(self.samples, key=lambda s: abs(s[0] - moment))[1] if self.samples else {}

    def series(self, label: str, since: float, until: float, step_s: float) -> list[float | None]:
        """``label``'s RSS in MiB every ``step_s`` s from ``since`` to ``until``: a plateau or a leak."""
        moments = [since + i * step_s for i in range(int((until - since) // step_s) + 1)]
        return [_mib(self.at(m).get(label)) for m in moments]

    def peak(self, since: float) -> dict[str, int]:
        peaks: dict[str, int] = {}
        for moment, sample in self.samples:
            if moment >= since:
                for label, value in sample.items():
                    peaks[label] = max(peaks.get(label, 0), value)
        return peaks


def load_label_studio(image_dir: Path) -> FakeProject:
    """The ENA24 project of the learning tests (its annotated tasks are what the training job exports)."""
    with open(image_dir / "labels.csv", newline="") as handle:
        labels = {row["filepath"]: row["label"] for row in csv.DictReader(handle)}
    return ena24_project(image_dir, labels, project=int(PROJECT))


def load_app(fake: FakeProject) -> FastAPI:
    """``fake``'s app plus never-seen photos: ``/data/upload/<p>/open-<n>/<name>`` is ``<name>`` + a trailer.

    The trailer (after the JPEG end marker, ignored by decoders) changes the bytes' sha256, so the
    backend's detection store misses and the detector runs, as on a task's first opening.
    """
    app = fake.app()

    @app.get("/data/upload/{project}/{opened}/{name}")
    def never_seen(request: Request, project: int, opened: str, name: str) -> Response:
        fake.check(request)
        path = fake.image_dir / Path(name).name
        return Response(path.read_bytes() + f"camtrap-load:{opened}".encode(), media_type="image/jpeg")

    return app


def detector_model(kind: str) -> str:
    if kind == "mdlite":
        return "mdlite"
    path = MODEL_CACHE / "tiny_md_v5.pt"
    if not path.is_file():
        make_yolov5_checkpoint(path)
    return str(path)


@contextmanager
def services(args: argparse.Namespace, scratch: Path) -> Iterator[tuple[str, dict[str, int], FakeProject]]:
    """Redis, the fake Label Studio, ``camtrap serve`` (2 workers) and one RQ worker; yields URL, PIDs, fake."""
    with ExitStack() as stack:
        redis_server = RedisServer(scratch).start()
        stack.callback(redis_server.stop)
        fake = load_label_studio(args.image_dir)
        ls_url = stack.enter_context(serve_in_thread(load_app(fake)))
        port = free_port()
        env = service_env(
            redis_server.url,
            scratch / "data",
            Path(detector_model(args.detector)),
            ls_url,
            HOST="127.0.0.1",
            PORT=str(port),
            WORKERS="2",
            TRAIN_EVERY_N_ANNOTATIONS="0",
        )
        logger.info("starting camtrap serve (WORKERS=2) on port %d and one RQ worker", port)
        backend = ManagedProcess(
            "backend", [str(VENV_BIN / "python"), "-m", "backend.cli", "serve"], env, REPO_ROOT, scratch / "backend.log"
        ).start()
        stack.callback(backend.stop)
        connection = stack.enter_context(redis.Redis.from_url(redis_server.url))
        worker = start_rq_worker(env, scratch / "worker.log", connection)  # while the backend loads its detector
        stack.callback(worker.stop)
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200,
            timeout=SERVE_START_TIMEOUT_S,
            what="camtrap serve to answer /health",
            processes=[backend],
        )
        wait_until(
            lambda: backend.log_tail(400).count("Application startup complete") >= 2,
            timeout=SERVE_START_TIMEOUT_S,
            what="both uvicorn workers to start",
            processes=[backend],
        )
        logger.info("backend and RQ worker up")
        yield url, {"uvicorn parent": backend.pid, "rq worker": worker.pid, "redis": redis_server.pid}, fake


def run_locust(
    args: argparse.Namespace, url: str, fake: FakeProject, scratch: Path, train_at_s: float
) -> tuple[Path, int]:
    """Run the scenario headless in a subprocess; returns locust's CSV prefix and its exit status."""
    config = scratch / "label_config.xml"
    config.write_text(fake.project_info(int(PROJECT))["label_config"])
    prefix = scratch / "locust"
    env = {
        **os.environ,
        "LOAD_PROJECT": PROJECT,
        "LOAD_LABEL_CONFIG": str(config),
        "LOAD_PHOTOS": ",".join(sorted(p.name for p in args.image_dir.glob("*.jpg"))),
        "LOAD_TRAIN_AT_S": str(train_at_s),
        "LOAD_PREDICT": "0" if args.skip_predict else "1",
    }
    command = [
        str(VENV_BIN / "locust"),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(args.users + 1),  # the admin (fixed_count 1) is one of them
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        args.time,
        "--stop-timeout",
        "30",
        "--host",
        url,
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    with open(scratch / "locust.log", "wb") as log:
        status = subprocess.run(command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
    return prefix, status.returncode


def read_stats(prefix: Path) -> dict[str, dict[str, float]]:
    """Locust's ``<prefix>_stats.csv``: name -> requests, failures, p50, p99, max (ms), as locust computed them."""
    stats = {}
    with open(f"{prefix}_stats.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            stats[row["Name"]] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "p50_ms": float(row["50%"]),
                "p99_ms": float(row["99%"]),
                "max_ms": float(row["Max Response Time"]),
            }
    return stats


def read_failures(prefix: Path) -> list[str]:
    with open(f"{prefix}_failures.csv", newline="") as handle:
        return [f"{r['Method']} {r['Name']}: {r['Error']} (x{r['Occurrences']})" for r in csv.DictReader(handle)]


def wait_for_training(url: str) -> dict[str, Any]:
    """``GET /jobs/train-1`` until the job ends (it may still run when the load stops)."""
    return wait_until(
        lambda: (info := httpx.get(f"{url}/jobs/{JOB}", timeout=5).json()).get("status") in ENDED and info,
        timeout=TRAIN_END_TIMEOUT_S,
        what="the training job to end",
        interval=1.0,
    )


def rss_moments(sampler: RssSampler, started: float, ended: float, warmup_s: float, job: dict[str, Any]) -> dict:
    """RSS samples at the warm-up end, once the promoted model is loaded ("settled"), at the end, and peaks.

    "settled" is :data:`SETTLE_S` after the training job ended (every worker has loaded the new
    classifier by then), or the warm-up end if that is later; None when it falls after the load.
    """
    warm = started + warmup_s
    settled = warm
    if job.get("ended_at"):
        settled = max(warm, datetime.fromisoformat(job["ended_at"]).timestamp() + SETTLE_S)
    return {
        "warm": sampler.at(warm),
        "settled": sampler.at(settled) if settled < ended else None,
        "end": sampler.at(ended),
        "peak": sampler.peak(started),
        "series": {
            label: sampler.series(label, warm, ended, SERIES_STEP_S)
            for label in sampler.at(ended)
            if label.startswith("uvicorn worker ") or label == "rq worker"
        },
    }


def summarize(
    stats: dict[str, dict[str, float]],
    failures: list[str],
    rss: dict[str, Any],
    job: dict[str, Any],
    args: argparse.Namespace,
    locust_status: int,
    load_before: float,
) -> dict[str, Any]:
    total = stats.get("Aggregated", {"requests": 0, "failures": 0})
    webhook, health = stats.get("/webhook", {}), stats.get("/health", {})
    early = stats.get(ANSWERED_BEFORE_RECORDED, {"requests": 0})
    warm, settled, end = rss["warm"] or {}, rss["settled"], rss["end"] or {}
    labels = sorted({label for key in ("warm", "settled", "end", "peak") if (sample := rss[key]) for label in sample})
    return {
        "run": {
            "users": args.users,
            "admin": 1,
            "spawn_rate": args.spawn_rate,
            "time": args.time,
            "warmup": args.warmup,
            "detector": args.detector,
            "locust_exit_status": locust_status,
            "skip_predict": args.skip_predict,
            "load_average_1min_before": load_before,
            "cpus": os.cpu_count(),
        },
        "endpoints": {name: s for name, s in stats.items() if name not in ("Aggregated", ANSWERED_BEFORE_RECORDED)},
        "requests": total["requests"] - early["requests"],
        "webhooks_answered_before_recorded": early["requests"],
        "failures": total["failures"],
        "failure_messages": failures,
        "training": {k: job.get(k) for k in ("status", "stage", "error", "enqueued_at", "started_at", "ended_at")},
        "rss_mib": {
            label: {
                "warm": _mib(warm.get(label)),
                "settled": _mib(settled.get(label)) if settled is not None else None,
                "end": _mib(end.get(label)),
                "peak": _mib((rss["peak"] or {}).get(label)),
                "growth_since_warm": _growth(warm, end, label),
                "growth_since_settled": _growth(settled, end, label) if settled is not None else None,
            }
            for label in labels
        },
        "rss_series_mib": {"step_s": SERIES_STEP_S, **rss["series"]},
        "verdicts": {
            f"webhook p99 < {WEBHOOK_P99_MS:.0f} ms": bool(webhook) and webhook["p99_ms"] < WEBHOOK_P99_MS,
            f"/health p99 < {HEALTH_P99_MS:.0f} ms": bool(health) and health["p99_ms"] < HEALTH_P99_MS,
            "0 failures": total["failures"] == 0,
            "training finished": job.get("status") == "finished",
        },
    }


def _growth(before: dict[str, int], after: dict[str, int], label: str) -> float | None:
    return _mib(after[label] - before[label]) if label in before and label in after else None


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def _shown(value: float | None, sign: bool = False) -> str:
    """A MiB figure, or "-" for a process that did not exist at that moment (a work horse between jobs)."""
    return "-" if value is None else (f"{value:+}" if sign else f"{value}")


def markdown(summary: dict[str, Any]) -> str:
    run = summary["run"]
    lines = [
        f"{run['users']} annotators + 1 admin, spawn rate {run['spawn_rate']}/s, {run['time']}, detector "
        f"{run['detector']}, camtrap serve WORKERS=2, one RQ worker; warm-up {run['warmup']}"
        f"{'; annotators skip /predict' if run['skip_predict'] else ''}; {run['cpus']} CPUs, load average "
        f"{run['load_average_1min_before']:.2f} before the run",
        f"requests {summary['requests']}, failures {summary['failures']}; webhooks answered at the 50 ms deadline "
        f"before Redis had recorded them (recorded after): {summary['webhooks_answered_before_recorded']}",
        "",
        "| endpoint | requests | failures | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in sorted(summary["endpoints"].items()):
        figures = f"{s['p50_ms']:.0f} | {s['p99_ms']:.0f} | {s['max_ms']:.0f}"
        lines.append(f"| {name} | {s['requests']} | {s['failures']} | {figures} |")
    job = summary["training"]
    lines += [
        "",
        f"training job: {job['status']} (enqueued {job['enqueued_at']}, started {job['started_at']}, "
        f"ended {job['ended_at']}){' error: ' + job['error'] if job['error'] else ''}",
        "",
        "RSS MiB: at the warm-up end, once the promoted classifier is loaded (settled), at the end, peak",
        "",
        "| process | warm-up end | settled | end | end - warm-up | end - settled | peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in summary["rss_mib"].items():
        cells = [_shown(r[k]) for k in ("warm", "settled", "end")]
        cells += [_shown(r["growth_since_warm"], sign=True), _shown(r["growth_since_settled"], sign=True)]
        cells.append(_shown(r["peak"]))
        lines.append(f"| {label} | {' | '.join(cells)} |")
    series = summary["rss_series_mib"]
    lines += ["", f"RSS MiB every {series['step_s']:.0f} s from the warm-up end:"]
    lines += [
        f"- {label}: {', '.join(_shown(v) for v in values)}" for label, values in series.items() if label != "step_s"
    ]
    lines += ["", *(f"- {'PASS' if ok else 'MISS'}: {what}" for what, ok in summary["verdicts"].items())]
    lines += [f"- failure: {f}" for f in summary["failure_messages"]]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, run the load, stop everything; the summary (see :func:`summarize`)."""
    warmup_s = seconds(args.warmup)
    train_at_s = seconds(args.train_at) if args.train_at else warmup_s
    with ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            scratch = args.keep
        else:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="camtrap-load-")))
        with services(args, scratch) as (url, pids, fake):
            sampler = RssSampler(pids).start()
            try:
                load_before = os.getloadavg()[0]
                started = time.time()
                logger.info("locust: %d annotators + 1 admin for %s", args.users, args.time)
                prefix, status = run_locust(args, url, fake, scratch, train_at_s)
                ended = time.time()
                logger.info("load done; waiting for the training job to end")
                job = wait_for_training(url)
            finally:
                sampler.stop()
            logger.info("stopping the services")
            stats, failures = read_stats(prefix), read_failures(prefix)
            rss = rss_moments(sampler, started, ended, warmup_s, job)
            return summarize(stats, failures, rss, job, args, status, load_before)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    summary = run(args)
    sys.stdout.write(json.dumps(summary, indent=2) + "\n" if args.json else markdown(summary))
    return 0 if all(summary["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
