"""Steady ``/predict`` load while a new classifier is promoted: failures, latency, and time to swap.

Starts a private Redis, a fake Label Studio serving the shared ENA24 photos, and the real backend with
``uvicorn --workers 2`` (the tiny generated MegaDetector, two tiny MobileNetV3 bundles). ``--clients``
threads send one-task ``/predict`` requests back to back; after ``--before`` seconds the second bundle
is promoted through ``POST /models/{version}/promote``; the load goes on ``--after`` seconds past the
moment every backend process has logged the swap. Printed: requests, failures (target 0), p50/p99
latency before / during / after, and seconds from the promotion to each process serving the new
version (target < 2 s). Usage::

    .venv/bin/python -m bench.hot_swap --clients 4
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from backend.contracts.registry import write_current
from tests.backend.bundles import write_bundle
from tests.backend.fake_ls import serve_in_thread
from tests.conftest import DEFAULT_IMAGES, MODEL_CACHE
from tests.learning.services import service_env, start_backend, swap_times
from tests.model_factory import make_yolov5_checkpoint
from tests.processes import RedisServer, free_port, wait_until
from tests.trainer.fake_label_studio import ena24_project, label_config

logger = logging.getLogger("bench.hot_swap")

PROJECT = "1"
BEFORE, AFTER = "p1-bench-before", "p1-bench-after"
DETECTOR_ID = "md_tiny_md_v5"


@dataclass(frozen=True)
class Sample:
    start: float
    end: float
    ok: bool
    version: str | None


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Promotion under /predict load.", add_help=add_help)
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default: 4)")
    parser.add_argument("--before", type=float, default=8.0, help="seconds of load before promoting (default: 8)")
    parser.add_argument("--after", type=float, default=8.0, help="seconds of load after the swap (default: 8)")
    parser.add_argument("--max-swap", type=float, default=20.0, help="give up waiting for the swap (default: 20 s)")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES, help=f"photos (default: {DEFAULT_IMAGES})")
    return parser


def make_bundles(models_dir: Path, labels: list[str]) -> None:
    """Two random-weight bundles (the tests' helper); the first one is served."""
    for version in (BEFORE, AFTER):
        write_bundle(models_dir, PROJECT, version, favourite=labels[0], labels=labels)
    write_current(models_dir, PROJECT, BEFORE)


def client_loop(url: str, bodies: list[dict], stop: threading.Event, out: list[Sample]) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        index = 0
        while not stop.is_set():
            start = time.time()
            try:
                response = http.post("/predict", json=bodies[index % len(bodies)])
                ok = response.status_code == 200
                version = response.json()["results"][0]["model_version"] if ok else None
            except (httpx.HTTPError, ValueError, KeyError, IndexError):
                ok, version = False, None
            out.append(Sample(start, time.time(), ok, version))
            index += 1


def percentiles(samples: list[Sample]) -> str:
    if not samples:
        return "no requests"
    latencies = sorted((s.end - s.start) * 1000 for s in samples)
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    return f"{len(samples):4d} requests, p50 {statistics.median(latencies):7.1f} ms, p99 {p99:7.1f} ms"


def main(args: argparse.Namespace) -> int:
    detector = MODEL_CACHE / "tiny_md_v5.pt"
    if not detector.is_file():
        make_yolov5_checkpoint(detector)
    with tempfile.TemporaryDirectory(prefix="hot-swap-bench-") as scratch:
        scratch_dir = Path(scratch)
        redis_server = RedisServer(scratch_dir).start()
        labels = {p.name: "Grey Fox" for p in args.image_dir.glob("*.jpg")}
        fake = ena24_project(args.image_dir, labels, project=int(PROJECT))
        make_bundles(scratch_dir / "data" / "models", ["Chicken", "Grey Fox", "Striped Skunk"])
        try:
            with serve_in_thread(fake.app()) as ls_url:
                env = service_env(redis_server.url, scratch_dir / "data", detector, ls_url)
                port = free_port()
                backend = start_backend(env, scratch_dir / "backend.log", port, workers=2)
                try:
                    return run_load(f"http://127.0.0.1:{port}", fake, backend, args)
                finally:
                    backend.stop()
        finally:
            redis_server.stop()


def run_load(url: str, fake, backend, args: argparse.Namespace) -> int:
    schema = label_config(["Chicken", "Grey Fox", "Striped Skunk"])
    httpx.post(f"{url}/setup", json={"project": f"{PROJECT}.1", "schema": schema}, timeout=30).raise_for_status()
    bodies = [
        {"tasks": [{**task, "annotations": []}], "project": f"{PROJECT}.1", "label_config": schema}
        for task in fake.tasks
    ]
    samples: list[Sample] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=client_loop, args=(url, bodies[i:] + bodies[:i], stop, samples))
        for i in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    time.sleep(args.before)
    old, new = f"{DETECTOR_ID}+{BEFORE}", f"{DETECTOR_ID}+{AFTER}"
    loaded = swap_times(backend.log(), PROJECT, old)
    promoted_at = time.time()
    httpx.post(f"{url}/models/{AFTER}/promote", params={"project": PROJECT}, timeout=30).raise_for_status()
    try:
        swapped = wait_until(
            lambda: (t := swap_times(backend.log(), PROJECT, new)) and set(t) >= set(loaded) and t,
            timeout=args.max_swap,
            what="every backend process to swap",
            interval=0.1,
            errors="raise",
        )
    finally:
        swap_done = time.time()
        time.sleep(args.after)
        stop.set()
        for thread in threads:
            thread.join()
    write_report(samples, promoted_at, swap_done, loaded, swapped, old, new, args.clients)
    return 0


def write_report(samples, promoted_at, swap_done, loaded, swapped, old, new, clients) -> None:
    before = [s for s in samples if s.end < promoted_at]
    during = [s for s in samples if s.end >= promoted_at and s.start <= swap_done]
    after = [s for s in samples if s.start > swap_done]
    stale = [s for s in after if s.version == old]
    out = sys.stdout
    out.write(f"clients {clients}, backend uvicorn --workers 2, tiny MegaDetector + MobileNetV3-Small bundles\n")
    out.write(f"requests {len(samples)}, failures {sum(not s.ok for s in samples)}\n")
    out.write(f"before:  {percentiles(before)}\n")
    out.write(f"during:  {percentiles(during)}\n")
    out.write(f"after:   {percentiles(after)}\n")
    for pid, created in sorted(swapped.items()):
        out.write(f"process {pid}: serving {new} {created - promoted_at:.3f} s after the promotion\n")
    out.write(
        f"every process swapped {max(swapped.values()) - promoted_at:.3f} s after the promotion "
        f"({len(loaded)} process(es) had the project loaded); requests started after that still on the "
        f"old version: {len(stale)}\n"
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main(get_args_parser().parse_args()))
