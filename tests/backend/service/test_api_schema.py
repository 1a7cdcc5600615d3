"""The OpenAPI schema tells the truth: a schemathesis run of the whole API against the real service.

The service runs under uvicorn on loopback (real HTTP, lifespan on) with the session's tiny detector,
a real Redis, the fake Label Studio and a trained bundle, with ``BASIC_AUTH_USER``/``BASIC_AUTH_PASS``
and ``WEBHOOK_SECRET`` set, as a deployment would. Schemathesis loads ``/openapi.json``, authenticates
with the security schemes the schema declares, and runs every operation through its examples,
coverage (every boundary, missing and wrong value, each undocumented method, requests without or
with wrong credentials) and fuzzing phases, valid and invalid requests, with every check: no server
error, no status or body the schema does not describe, no schema-valid request refused, no invalid
request accepted, authentication enforced. The failures are counted as schemathesis's own report
counts them (one per operation, check and distinct answer). The stateful phase is off: the API has
no links to follow, and it would double the run time on a small shared CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import schemathesis
from schemathesis import engine
from schemathesis.engine import events
from schemathesis.engine.statistic import Statistic

from backend.service.deps import BASIC_SCHEME, SECRET_HEADER_SCHEME, SECRET_QUERY_SCHEME
from backend.vision.detector import Detector
from tests.backend.bundles import write_bundle
from tests.backend.conftest import make_settings, running_app

#: The credentials the service demands and schemathesis is given.
BASIC = ("labelstudio", "basic-pass")
SECRET = "webhook-secret"
#: Generated requests per operation and phase: enough to reach every branch of every route, few
#: enough that the whole run stays near a minute on two shared cores.
MAX_EXAMPLES = 12
#: Fixed seed: a failure found once is found again.
SEED = 7
#: A labeling config is XML, which JSON Schema cannot describe: a string that is not a config this
#: backend can serve is answered 422 with the reason (Label Studio shows it on the model card). These
#: routes may therefore refuse a schema-valid body with 422; every other check applies to them as is.
LABEL_CONFIG_ROUTES = ("/setup", "/predict")
#: Schemathesis's default answers to a valid request, and 422.
ACCEPTED_OR_CONFIG_REFUSED = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
#: A project with a trained bundle, so /models, /versions and promotion answer with real content.
PROJECT = "7"


@pytest.fixture(scope="module")
def api_url(
    tmp_path_factory: pytest.TempPathFactory, fake_ls: tuple, redis_server: str, detector: Detector
) -> Iterator[str]:
    redis.Redis.from_url(redis_server).flushdb()
    settings = make_settings(
        tmp_path_factory.mktemp("api-schema") / "data",
        fake_ls[1],
        redis_server,
        basic_auth_user=BASIC[0],
        basic_auth_pass=BASIC[1],
        webhook_secret=SECRET,
        prelabel_on_import=False,
    )
    write_bundle(Path(settings.models_dir), PROJECT, "v1", favourite="Grey Fox")
    with running_app(settings, detector) as url:
        yield url
    redis.Redis.from_url(redis_server).flushdb()


def run_schemathesis(base_url: str) -> Statistic:
    """Run schemathesis on the service at ``base_url``; the statistics hold every unique failure."""
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": base_url,
            "workers": 1,
            "continue-on-failure": True,
            "request-timeout": 30,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": {"stateful": {"enabled": False}},
            "checks": {"enabled": True},
            "auth": {
                "openapi": {
                    BASIC_SCHEME: {"username": BASIC[0], "password": BASIC[1]},
                    SECRET_HEADER_SCHEME: {"api_key": SECRET},
                    SECRET_QUERY_SCHEME: {"api_key": SECRET},
                }
            },
            "operations": [
                {
                    "include-path": path,
                    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED_OR_CONFIG_REFUSED}},
                }
                for path in LABEL_CONFIG_ROUTES
            ],
        }
    )
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)
    statistic = Statistic()
    errors: list[str] = []
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            statistic.on_scenario_finished(event.recorder)
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    assert not errors, "schemathesis could not test every operation:\n" + "\n".join(errors)
    return statistic


def describe(statistic: Statistic) -> list[str]:
    """One paragraph per unique failure: operation, status, check title, message and the curl to replay it."""
    lines = []
    for label, groups in sorted(statistic.failures.items()):
        for group in groups.values():
            status = group.response.status_code if group.response is not None else "-"
            for failure in group.failures:
                lines.append(f"{label} -> {status}: {failure.title}\n  {failure.message}\n  {group.code_sample}")
    return lines


def test_whole_api_conforms_to_its_schema(api_url: str) -> None:
    statistic = run_schemathesis(api_url)
    failures = describe(statistic)
    assert statistic.total_cases > 100, f"schemathesis ran only {statistic.total_cases} cases"
    assert not failures, f"{len(failures)} schemathesis failures in {statistic.total_cases} cases:\n\n" + "\n\n".join(
        failures
    )
