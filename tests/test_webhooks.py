"""Webhooks delivered by the gateway's dispatcher to a local receiver: signed, filtered, retried
after the receiver first fails, every attempt recorded in the job. Real gateway, Redis, S3 and
workers; the model hub and the GPU are faked (tiny random models, CPU)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from mmq.clients.keys import KeyStore
from mmq.tasks.errors import ConfigurationError, InvalidInput
from mmq.tasks.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify


class Receiver:
    """An HTTP server that answers 500 to the first `fail_first` POSTs, then 200, keeping each."""

    def __init__(self, fail_first: int) -> None:
        self.received: list[tuple[int, dict[str, str], bytes]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if len(receiver.received) < receiver.fail_first else 200
                receiver.received.append((status, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    running = Receiver(fail_first=1)
    yield running
    running.server.shutdown()


def wait_for(fetch, until=bool, timeout_s=120):
    """`fetch()` again and again until `until` holds for what it returns; that value."""
    deadline = time.monotonic() + timeout_s
    while not until(value := fetch()):
        assert time.monotonic() < deadline, f"condition not met in time; last: {value}"
        time.sleep(0.2)
    return value


def test_signed_filtered_retried_and_recorded(gateway, receiver):
    key = gateway.new_key("hooked")
    secret = KeyStore(gateway.stack.redis_client()).webhook_secret("hooked")
    headers = {"Authorization": f"Bearer {key}"}
    job = httpx.post(f"{gateway.url}/v1/jobs", headers=headers, json={
        "pipeline": "text2image", "inputs": {"prompt": "a kite", "steps": 2, "width": 64, "height": 64},
        "webhook": {"url": receiver.url, "events": ["step.succeeded", "job.succeeded"]}}).json()
    assert job["webhook"] == {"url": receiver.url, "events": ["step.succeeded", "job.succeeded"]}

    # Two events wanted; the first POST fails, so three POSTs in all.
    wait_for(lambda: len(receiver.received) >= 3)
    view = wait_for(lambda: httpx.get(f"{gateway.url}/v1/jobs/{job['id']}", headers=headers).json(),
                    until=lambda v: len(v["deliveries"]) >= 3)
    bodies = [json.loads(body) for _, _, body in receiver.received]
    for status, received_headers, body in receiver.received:
        assert verify(secret, received_headers, body), "signature does not verify"
        assert not verify("another secret", received_headers, body)
    assert sorted(b["type"] for b in bodies[1:]) == ["job.succeeded", "step.succeeded"]
    assert all(b["job_id"] == job["id"] for b in bodies)
    # The failed delivery was retried with the same delivery id, after the backoff.
    failed = receiver.received[0]
    retried = [r for r in receiver.received[1:] if json.loads(r[2])["id"] == json.loads(failed[2])["id"]]
    assert len(retried) == 1 and retried[0][0] == 200
    assert int(retried[0][1][TIMESTAMP_HEADER]) >= int(failed[1][TIMESTAMP_HEADER])

    attempts = view["deliveries"]
    first = next(a for a in attempts if a["attempt"] == 1 and not a["ok"])
    assert first["status_code"] == 500 and first["retry_at"] > first["at"]
    second = next(a for a in attempts if a["delivery"] == first["delivery"] and a["attempt"] == 2)
    assert second["ok"] and second["status_code"] == 200 and second["at"] >= first["retry_at"]
    assert sum(a["ok"] for a in attempts) == 2


def test_a_receiver_that_never_answers_well_is_given_up_on(make_stack, tmp_path):
    from tests.conftest import launch_gateway

    always_failing = Receiver(fail_first=10**6)
    # A Redis of its own: the attempts bound is the dispatchers' setting, and no other may join in.
    # No worker either: the job's first event (queued) is the one its webhook wants.
    gateway = launch_gateway(make_stack(), tmp_path, MMQ_WEBHOOK_BACKOFF_S="0.1", MMQ_WEBHOOK_MAX_ATTEMPTS="3")
    try:
        headers = {"Authorization": f"Bearer {gateway.new_key('hooked')}"}
        job = httpx.post(f"{gateway.url}/v1/jobs", headers=headers, json={
            "pipeline": "text2image", "inputs": {"prompt": "a kite"},
            "webhook": {"url": always_failing.url, "events": ["job.queued"]}}).json()
        view = wait_for(lambda: httpx.get(f"{gateway.url}/v1/jobs/{job['id']}", headers=headers).json(),
                        until=lambda v: any(a.get("gave_up") for a in v["deliveries"]))
        assert [a["attempt"] for a in view["deliveries"]] == [1, 2, 3]
        assert len(always_failing.received) == 3
    finally:
        gateway.process.terminate()
        gateway.process.wait(timeout=20)
        always_failing.server.shutdown()


def test_signature_scheme():
    body = b'{"a": 1}'
    headers = {TIMESTAMP_HEADER: "1700000000", SIGNATURE_HEADER: sign("s3cret", 1700000000, body)}
    assert verify("s3cret", headers, body, now=1700000100)
    assert not verify("s3cret", headers, body + b" ", now=1700000100)  # body changed
    assert not verify("s3cret", headers, body, now=1700001000)  # too old: a replay


def test_bad_webhooks_are_refused_and_direct_ones_need_a_secret(client):
    with pytest.raises(InvalidInput, match="unknown event 'job.done'"):
        client.submit("text2image", prompt="x", webhook={"url": "http://example.com", "events": ["job.done"]})
    with pytest.raises(ConfigurationError, match="MMQ_WEBHOOK_SECRET"):
        client.submit("text2image", prompt="x", webhook="http://example.com/hook")
