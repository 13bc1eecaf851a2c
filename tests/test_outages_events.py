"""A job's server-sent events when Redis goes away after the stream opened: the stream ends with an
`event: error` whose data is the gateway's error body (503's: `unavailable`, service `redis`), the
gateway logs one line and no traceback, and the SDK following the job through the gateway raises
the same `BrokerUnavailable` that a direct client would.

Real: a gateway process (uvicorn), its redis-server stopped mid-stream, and the S3 server. No
worker: the jobs stay queued, so their streams stay open until Redis goes.
"""

import json
from collections.abc import Iterator

import httpx
import pytest

from mmq.clients import Client
from mmq.clients.servers import stop
from mmq.tasks.errors import BrokerUnavailable
from tests.conftest import launch_gateway


def submitted(gateway, key: str) -> str:
    response = httpx.post(f"{gateway.url}/v1/jobs", headers={"Authorization": f"Bearer {key}"},
                          json={"pipeline": "text2image", "inputs": {"prompt": "a kite in the rain"}})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str | None, str, dict]]:
    """The events among server-sent event lines, as (id, name, data), until the lines end."""
    current: dict[str, str] = {}
    for line in lines:
        if line.startswith(("id:", "event:", "data:")):
            field, _, value = line.partition(":")
            current[field] = value.strip()
        elif line == "" and "data" in current:
            yield current.get("id"), current["event"], json.loads(current["data"])
            current = {}


def test_a_redis_outage_mid_stream_ends_it_with_an_error_event_and_one_log_line(make_stack, tmp_path):
    stack = make_stack()
    gateway = launch_gateway(stack, tmp_path)
    try:
        key = gateway.new_key("streamer")
        raw_job, sdk_job = submitted(gateway, key), submitted(gateway, key)
        address = f"127.0.0.1:{stack.redis.port}"
        sdk = Client(gateway_url=gateway.url, api_key=key)
        with httpx.stream("GET", f"{gateway.url}/v1/jobs/{raw_job}/events",
                          headers={"Authorization": f"Bearer {key}"}, timeout=60) as stream:
            assert stream.status_code == 200
            events = sse_events(stream.iter_lines())
            assert next(events)[1] == "job.queued"  # given open streams, past their first event
            followed = sdk.job(sdk_job).events()
            assert next(followed)["status"] == "queued"

            stop(stack.redis.pid)  # when Redis goes away

            rest = list(events)  # then the stream ends, its last event saying why
            with pytest.raises(BrokerUnavailable, match=f"Redis unreachable at {address}"):
                next(followed)
        sdk.close()
    finally:
        stop(gateway.process.pid, timeout_s=20)

    [(event_id, name, body)] = rest
    assert event_id is None and name == "error"  # no id: resuming with Last-Event-ID misses nothing
    assert list(body) == ["error"] and body["error"]["code"] == "unavailable", body
    assert body["error"]["service"] == "redis" and address in body["error"]["message"], body
    log = gateway.log()
    for job_id in (raw_job, sdk_job):
        lines = [line for line in log.splitlines() if f"event stream of job {job_id} ended" in line]
        assert len(lines) == 1 and f"BrokerUnavailable: Redis unreachable at {address}" in lines[0], lines
    assert "Traceback" not in log, log[-3000:]
