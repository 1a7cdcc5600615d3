"""The locust load run of ``bench.load``, short: annotators and an admin against the real processes.

Real redis-server, ``camtrap serve`` with two workers, one RQ worker, the fake Label Studio and locust
in its own process. On a shared 2-core machine ``/predict`` runs the detector next to the training
job, so only what holds on any machine is asserted here; the strict targets (webhook p99 < 100 ms)
are the verdicts ``python -m bench.load`` prints for the full run (docs/reliability.md, "Load").
"""

from __future__ import annotations

import pytest

from bench.load import get_args_parser, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

#: Bounds that hold on a loaded 2-core machine (Label Studio's own limits are 1 s for both).
WEBHOOK_P99_BOUND_MS = 500.0
HEALTH_P99_BOUND_MS = 1000.0


def test_a_short_load_run_serves_every_request_and_finishes_the_training_job(ena24_dir) -> None:
    args = get_args_parser().parse_args(
        ["--users", "4", "--spawn-rate", "4", "--time", "12s", "--warmup", "4s", "--train-at", "2s"]
        + ["--image-dir", str(ena24_dir)]
    )
    summary = run(args)
    endpoints = summary["endpoints"]
    assert summary["failures"] == 0, summary["failure_messages"]
    assert summary["run"]["locust_exit_status"] == 0
    for name in ("/health", "/setup", "/predict", "/webhook", "/webhook START_TRAINING", "/jobs/[id]"):
        assert endpoints.get(name, {}).get("requests", 0) > 0, f"no {name} requests: {sorted(endpoints)}"
    assert endpoints["/predict"]["requests"] >= 4, "every annotator opens at least one task"
    assert summary["training"]["status"] == "finished", summary["training"]
    assert endpoints["/webhook"]["p99_ms"] < WEBHOOK_P99_BOUND_MS, endpoints["/webhook"]
    assert endpoints["/health"]["p99_ms"] < HEALTH_P99_BOUND_MS, endpoints["/health"]
    rss = summary["rss_mib"]
    assert sum(label.startswith("uvicorn worker ") for label in rss) == 2, f"two uvicorn workers sampled: {rss}"
    assert {"uvicorn parent", "rq worker", "redis"} <= set(rss), rss
    assert rss["rq work horse"]["peak"], "the training job ran in a work horse, sampled"
