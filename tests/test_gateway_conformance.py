"""The gateway against its own OpenAPI document (docs/openapi.json), with schemathesis and every check
it has: no server error; every status, content type, header and body as declared; valid requests
accepted and invalid ones refused; 405 with `Allow` for a method a path does not have; a credential
that matters. Per operation its examples, the coverage of its constraints and fuzzed requests; then
stateful sequences that follow the document's links from a submission to the routes that take the
new job's id.

Real: a gateway process over a real Redis and SeaweedFS, with a real API key. No worker serves that
Redis: a submitted job stays queued, which is all the API's shape needs; of its event stream (which lasts as long
as the job), schemathesis reads the first event.

Short and repeatable: a fixed seed, derandomized generation, a few examples per operation.
"""

from __future__ import annotations

from pathlib import Path

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.config import SchemathesisConfig

from mmq.clients.servers import start_redis
from tests.conftest import Stack, base_env, launch_gateway, stop

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
SEED = 20240516
# Schemathesis's defaults for a valid request, and why some operations may refuse one anyway.
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
EXCEPTIONS = [
    # A declared size over this deployment's MMQ_MAX_UPLOAD_BYTES: a setting, not part of the document.
    ("create_upload", ["413"]),
    # Whether a pipeline exists, whether an ad-hoc one is wired right and whether the inputs fit its
    # schema depend on the catalogue (GET /v1/pipelines); the document says so and declares the 422.
    ("submit_job", ["413", "422"]),
    # A plan's inputs are files (by reference), texts and numbers, named as a plan can refer to them;
    # whether an upload or artifact exists and is yours is the store's to say; the document declares the 422.
    ("plan_job", ["413", "422"]),
]


CONFIG = SchemathesisConfig.from_dict({
    "seed": SEED,
    "max-stream-events": 1,
    "request-timeout": 15,
    # The key is the run's credential (below): no made-up Authorization headers besides.
    "generation": {"max-examples": 30, "deterministic": True, "database": "none",
                   "with-security-parameters": False},
    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED},
               # DELETE /v1/jobs/{job_id} cancels the job, which stays readable (status cancelled) until
               # it expires, as the document says: not the deletion this check expects.
               "use_after_free": {"enabled": False}},
    "operations": [
        *({"include-operation-id": operation_id,
           "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED + more}}}
          for operation_id, more in EXCEPTIONS),
        # A stream resumed after its last event has nothing to send until the job moves: read it briefly.
        {"include-operation-id": "follow_job_events", "request-timeout": 1},
    ],
})
# The committed document, which clients are generated from (test_gateway checks the gateway serves it).
schema = schemathesis.openapi.from_path(DOCUMENT, config=CONFIG)
SUBMISSION = schema.raw_schema["components"]["schemas"]["JobRequest"]["examples"][0]


class BearerKey(requests.auth.AuthBase):
    """A real API key on every request, given to schemathesis as the credential of the run (so that its
    `ignored_auth` check knows it for a valid one, and tries the request without it and with a wrong one)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.key}"
        return request


@pytest.fixture(scope="module")
def target(s3_server, model_cache, tmp_path_factory):
    """Where every request goes, and with which key: a gateway of its own, over a Redis of its own (no
    worker of the session takes its jobs, whichever tests ran before) and the session's SeaweedFS."""
    folder = tmp_path_factory.mktemp("conformance")
    redis = start_redis(folder, persistent=False, tied=True)
    env = base_env(model_cache, redis.port, s3_server.port)
    gateway = launch_gateway(Stack(redis=redis, s3=s3_server, env=env), folder)
    yield {"base_url": gateway.url, "auth": BearerKey(gateway.new_key("acme"))}
    stop(gateway.process.pid, timeout_s=20)
    stop(redis.pid)


@schema.parametrize()
def test_each_operation_conforms(case, target):
    case.call_and_validate(**target)


def test_sequences_that_follow_the_links_conform(target):
    answered = set()

    class Sequences(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return target

        def before_call(self, case):
            # Which pipelines exist and what their inputs are is the catalogue's to say, not the schema's:
            # a valid submission in a sequence is the document's own example (with a generated webhook).
            if case.operation.label == "POST /v1/jobs" and case.meta.generation.mode.is_positive:
                case.body = {**SUBMISSION, **{k: v for k, v in case.body.items() if k == "webhook"}}

        def after_call(self, response, case):
            super().after_call(response, case)
            answered.add((case.operation.label, response.status_code))

    Sequences.run(settings=hypothesis.settings(
        max_examples=30, stateful_step_count=6, derandomize=True, database=None, deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck)))
    # The links led from new jobs to the routes that take their ids (no worker: no outputs to download).
    assert {("POST /v1/jobs", 201), ("GET /v1/jobs/{job_id}", 200), ("DELETE /v1/jobs/{job_id}", 200),
            ("GET /v1/jobs/{job_id}/events", 200)} <= answered, "; ".join(map(str, sorted(answered)))
