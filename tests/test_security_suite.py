"""The security part of the reliability suite: what an attacker on a queue, a tenant reaching for
another's data, a log reader, a holder of an old link, or a client sending an endless body gets.

Real: a redis-server, a SeaweedFS S3 server (`weed mini`), the caption and diffusion Celery worker
processes, gateway processes (FastAPI under uvicorn, with their webhook dispatcher), the SDK over
HTTP, a local webhook receiver and raw sockets. Faked: the model hub (tiny random models of the
real architectures, built locally) and the GPU (the code path is CPU here).

Complements tests/test_security.py (a pickle message), tests/test_gateway.py (tenant isolation
over plain HTTP, 413 for declared and small chunked bodies) and tests/test_cli.py (Flower's password).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import json
import os
import select
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from kombu import Connection, Exchange, Queue

from mmq.clients import Client
from mmq.clients.client import Job
from mmq.clients.keys import KeyStore
from mmq.tasks import JobStatus
from mmq.tasks.errors import InvalidInput, JobNotFound
from mmq.tasks.tenants import artifact_prefix, key_within
from tests.conftest import launch_gateway

pytestmark = pytest.mark.reliability

TINY_IMAGE = {"steps": 1, "width": 64, "height": 64}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    return response.json()["error"]


def wait_for(fetch, until=bool, timeout_s: float = 120):
    """`fetch()` again and again until `until` holds for what it returns; that value."""
    deadline = time.monotonic() + timeout_s
    while not until(value := fetch()):
        assert time.monotonic() < deadline, f"condition not met in {timeout_s} s; last: {value}"
        time.sleep(0.2)
    return value


def finished_view(gateway, key: str, job_id: str) -> dict:
    return wait_for(lambda: httpx.get(f"{gateway.url}/v1/jobs/{job_id}", headers=auth(key)).json(),
                    until=lambda view: view["status"] in ("succeeded", "failed", "cancelled"))


def upload(gateway, key: str, data: bytes) -> dict[str, str]:
    created = httpx.post(f"{gateway.url}/v1/uploads", json={"media_type": "image/png", "size": len(data)},
                         headers=auth(key))
    assert created.status_code == 201, created.text
    assert httpx.put(created.json()["url"], content=data).status_code == 200
    return created.json()["input"]


def stop_gateway(running) -> None:
    running.process.terminate()
    running.process.wait(timeout=20)


# -- 1. YAML objects on a queue ------------------------------------------------------------------

# Each body, if it were loaded with an unsafe YAML loader, would run a command creating MARKER.
YAML_ATTACKS = {
    "caption": ("mmq.caption", '!!python/object/apply:os.system ["touch {marker}"]'),
    "diffusion": ("mmq.text2image", '!!python/object/apply:subprocess.check_call [["touch", "{marker}"]]'),
}
YAML_REFUSAL = "Refusing to deserialize untrusted content of type yaml (application/x-yaml)"


def publish_raw(broker_url: str, queue: str, task: str, body: bytes, content_type: str) -> None:
    """A message with Celery's headers and a body of any content type, straight onto `queue`."""
    task_id = uuid.uuid4().hex
    exchange = Exchange(queue, type="direct")
    with Connection(broker_url) as connection:
        connection.Producer().publish(
            body, content_type=content_type, content_encoding="utf-8", exchange=exchange, routing_key=queue,
            declare=[Queue(queue, exchange, routing_key=queue)],
            headers={"lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None,
                     "group": None, "retries": 0, "argsrepr": "", "kwargsrepr": ""})


def test_a_yaml_object_message_is_not_executed(workers, client, sample_image, tmp_path, figure):
    logs = {w.specialisation: w for w in workers.workers if w.specialisation in YAML_ATTACKS}
    refusals_before = {name: worker.log().count(YAML_REFUSAL) for name, worker in logs.items()}
    markers = {}
    for queue, (task, template) in YAML_ATTACKS.items():
        markers[queue] = tmp_path / f"pwned-{queue}"
        body = template.format(marker=markers[queue]).encode()
        publish_raw(workers.env["MMQ_BROKER_URL"], queue, task, body, "application/x-yaml")

    # Each queue is first in, first out: once a later good job is done, the YAML was dealt with.
    good = [client.submit("caption", image=sample_image), client.submit("text2image", prompt="a boat", **TINY_IMAGE)]
    records = [job.wait(timeout_s=120) for job in good]
    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 2, [r.error for r in records]
    assert not any(marker.exists() for marker in markers.values())
    refused = {name: worker.log().count(YAML_REFUSAL) - refusals_before[name] for name, worker in logs.items()}
    assert refused == {"caption": 1, "diffusion": 1}, refused
    assert all(worker.process.poll() is None for worker in logs.values())
    figure("Security: YAML-object messages on the queues", load=f"{len(good)} good jobs after them",
           bad_inputs=f"{len(YAML_ATTACKS)} YAML python/object messages (caption, diffusion)", lost=0,
           result=f"{sum(refused.values())} refused as untrusted content, 0 executed, "
                  f"{len(records)}/{len(good)} good jobs succeeded")


# -- 2. Artifact keys stay under the tenant's prefix ----------------------------------------------

PREFIX = "tenants/acme/"
INSIDE = ["tenants/acme/x", "tenants/acme/blobs/ab/cd.png", "tenants/acme/uploads/" + "0" * 32,
          "tenants/acme/a.b/..c", "tenants/acme/.hidden"]
ESCAPES = [
    "tenants/acme/../globex/x",  # climbing out
    "tenants/acme/x/../../globex/x",
    "tenants/acme/x/..",
    "tenants/acme/..",
    "/etc/passwd",  # absolute
    "/tenants/acme/x",
    "s3://mmq-test/tenants/globex/x",  # a whole URI where a key belongs
    "s3://mmq-test/tenants/acme/x",
    "tenants/acme/./x",  # not normalised
    "tenants/acme//x",
    "tenants/acme/x/",
    "tenants/acme/",
    "tenants/acme\\..\\globex\\x",  # backslashes
    "tenants/acme/..\\..\\globex\\x",
    "tenants/acme/x\x00/../../globex/x",  # NUL
    "tenants/acme/\x00",
    "tenants/acmex/x",  # prefix confusion
    "tenants/acme-evil/x",
    "tenants/acme",
    "tenants/globex/x",
    "TENANTS/acme/x",
    "",
]


def test_key_within_refuses_every_escape(figure):
    accepted = [key for key in ESCAPES if key_within(key, PREFIX)]
    refused_inside = [key for key in INSIDE if not key_within(key, PREFIX)]
    assert accepted == [], f"keys that escape {PREFIX!r} were accepted: {accepted}"
    assert refused_inside == []
    assert artifact_prefix("acme") == PREFIX and artifact_prefix(None) == ""
    with pytest.raises(InvalidInput):
        artifact_prefix("../globex")
    figure("Security: artifact keys checked against the tenant prefix", load=f"{len(INSIDE)} keys inside",
           bad_inputs=f"{len(ESCAPES)} escaping keys (.., absolute, URIs, ./, //, \\, NUL, prefix confusion)",
           lost=0, result=f"{len(ESCAPES) - len(accepted)}/{len(ESCAPES)} refused, {len(INSIDE)}/{len(INSIDE)} "
                          "inside accepted")


def escaping_uris(attacker: str, victim_key: str, bucket: str) -> list[str]:
    """URIs that try to name `victim_key` (or anything outside the attacker's prefix) as its own."""
    own, victim_tenant = artifact_prefix(attacker), victim_key.split("/")[1]
    rest = victim_key.removeprefix(f"tenants/{victim_tenant}/")
    return [
        f"s3://{bucket}/{victim_key}",  # plainly another tenant's
        f"s3://{bucket}/{own}../{victim_tenant}/{rest}",
        f"s3://{bucket}/{own}x/../../{victim_tenant}/{rest}",
        f"s3://{bucket}/{own}./../{victim_tenant}/{rest}",
        f"s3://{bucket}/{own}.",
        f"s3://{bucket}//{victim_key}",  # absolute keys
        f"s3://{bucket}//etc/passwd",
        f"s3://{bucket}/{own}/x",  # tenants/<attacker>//x
        f"s3://{bucket}/{own}..\\{victim_tenant}\\" + rest.replace("/", "\\"),  # backslashes
        f"s3://{bucket}/{own}x\x00/../../{victim_tenant}/{rest}",
        f"s3://{bucket}/",
        f"s3://other-bucket/{own}x",  # another bucket
        f"s3://other-bucket/{victim_key}",
        "/etc/passwd",  # not s3:// at all
        "file:///etc/passwd",
        f"S3://{bucket}/{own}x",
        f"s3://{bucket}",
    ]


def test_artifact_references_cannot_escape_the_tenant_prefix(gateway, sample_image, figure):
    # The victim's name extends the attacker's, so a prefix check without its "/" would let it through.
    attacker, victim = "sec-acme", "sec-acmex"
    attacker_key, victim_key = gateway.new_key(attacker), gateway.new_key(victim)
    bucket = gateway.stack.env["MMQ_S3_BUCKET"]
    stolen = httpx.post(f"{gateway.url}/v1/jobs", headers=auth(victim_key), json={
        "pipeline": "caption", "inputs": {"image": upload(gateway, victim_key, sample_image.read_bytes())}})
    assert stolen.status_code == 201, stolen.text
    victim_ref = {k: v for k, v in stolen.json()["inputs"]["image"].items() if k != "url"}
    victim_object = victim_ref["uri"].removeprefix(f"s3://{bucket}/")
    assert victim_object.startswith(artifact_prefix(victim))
    # The attacker's own artifact, by reference, is accepted: the refusals below are about the key.
    own = httpx.post(f"{gateway.url}/v1/jobs", headers=auth(attacker_key), json={
        "pipeline": "caption", "inputs": {"image": upload(gateway, attacker_key, sample_image.read_bytes())}})
    assert own.status_code == 201, own.text
    own_ref = {k: v for k, v in own.json()["inputs"]["image"].items() if k != "url"}
    again = httpx.post(f"{gateway.url}/v1/jobs", headers=auth(attacker_key),
                       json={"pipeline": "caption", "inputs": {"image": own_ref}})
    assert again.status_code == 201, again.text
    redis = gateway.stack.redis_client()
    listed_before = httpx.get(f"{gateway.url}/v1/jobs", params={"limit": 100}, headers=auth(attacker_key)).json()
    jobs_before = redis.zcard("mmq:jobs:all")

    attempts = escaping_uris(attacker, victim_object, bucket)
    refusals = []
    for uri in attempts:
        response = httpx.post(f"{gateway.url}/v1/jobs", headers=auth(attacker_key), json={
            "pipeline": "caption", "inputs": {"image": {**victim_ref, "uri": uri}}})
        refusals.append((uri, response.status_code, response.json().get("error", {})))
    wrong = [(uri, status, error) for uri, status, error in refusals
             if status != 422 or error.get("code") != "invalid_input" or error.get("field") != "image"]
    assert wrong == [], wrong

    listed_after = httpx.get(f"{gateway.url}/v1/jobs", params={"limit": 100}, headers=auth(attacker_key)).json()
    assert listed_after == listed_before and len(listed_after["jobs"]) == 2
    assert redis.zcard("mmq:jobs:all") == jobs_before  # no job created, owned or not
    figure("Security: artifact references outside the tenant prefix, through the gateway",
           load="2 tenants (one name a prefix of the other), 2 accepted jobs by own reference",
           bad_inputs=f"{len(attempts)} escaping artifact URIs", lost=0,
           result=f"{len(attempts) - len(wrong)}/{len(attempts)} refused 422 naming the input, 0 jobs created")


# -- 3. Tenant isolation through the SDK ----------------------------------------------------------

def test_a_tenant_sees_nothing_of_another_through_the_sdk(gateway, figure):
    owner_key, intruder_key = gateway.new_key("sdk-owner"), gateway.new_key("sdk-intruder")
    with Client(gateway_url=gateway.url, api_key=owner_key) as owner, \
            Client(gateway_url=gateway.url, api_key=intruder_key) as intruder:
        job = owner.submit("text2image", prompt="a lighthouse", **TINY_IMAGE)
        refused = 0
        with pytest.raises(JobNotFound):  # while it is queued or running
            intruder.cancel(job.id)
        refused += 1
        assert job.wait(timeout_s=120).status is JobStatus.SUCCEEDED  # the intruder's cancel did nothing
        image = job.outputs["image"]

        for attempt in (lambda: intruder.job(job.id), lambda: intruder.cancel(job.id),
                        lambda: Job(job.id, intruder).record(), lambda: Job(job.id, intruder).outputs,
                        lambda: list(Job(job.id, intruder).events())):
            with pytest.raises(JobNotFound):
                attempt()
            refused += 1
        assert job.id not in [j.id for j in intruder.jobs(limit=100)[0]]
        refused += 1
        with pytest.raises(InvalidInput) as stolen:  # the owner's output as the intruder's input
            intruder.submit("caption", image=image)
        assert stolen.value.field == "image"
        refused += 1
        output_path = f"{gateway.url}/v1/jobs/{job.id}/outputs/image"
        assert error_of(httpx.get(output_path, headers=auth(intruder_key)), 404)["code"] == "job_not_found"
        refused += 1

        # The owner still has all of it.
        assert owner.job(job.id).status() is JobStatus.SUCCEEDED
        assert job in owner.jobs(limit=100)[0]
        downloaded = httpx.get(output_path, headers=auth(owner_key))
        assert downloaded.status_code == 200 and downloaded.content == image.read()
    figure("Security: tenant isolation through the SDK", load="1 text2image job of one tenant",
           bad_inputs=f"{refused} reads, cancels, listings and reuses by another tenant", lost=0,
           result=f"{refused}/{refused} refused (JobNotFound, InvalidInput, 404); the job succeeded untouched")


# -- 4. Secrets stay out of logs and records ------------------------------------------------------

class Receiver:
    """A webhook receiver answering 200, keeping each request's headers and body."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def server_log(pid: int) -> str:
    """The log of a server started by `mmq.clients.servers`: its standard output is that file."""
    return Path(os.readlink(f"/proc/{pid}/fd/1")).read_text(errors="replace")


def readable_forms(raw: bytes) -> list[bytes]:
    """`raw`, and what it holds base64-encoded inside JSON (Celery messages carry their body so)."""
    forms = [raw]
    try:
        value = json.loads(raw)
    except ValueError:
        return forms
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and len(item) >= 16 and len(item) % 4 == 0:
            try:
                forms.extend(readable_forms(base64.b64decode(item, validate=True)))
            except (binascii.Error, ValueError):
                pass
    return forms


def redis_contents(redis) -> dict[tuple[str, str], bytes]:
    """Every value in Redis, as {(key, where): bytes}: all hash fields, list, set, zset and stream members."""
    found: dict[tuple[str, str], bytes] = {}
    for raw_key in redis.scan_iter(count=1000):
        key, kind = raw_key.decode(errors="replace"), redis.type(raw_key).decode()
        found[(key, "name")] = raw_key
        if kind == "string":
            found[(key, "value")] = redis.get(raw_key) or b""
        elif kind == "hash":
            for field, value in redis.hgetall(raw_key).items():
                found[(key, field.decode(errors="replace"))] = field + b"=" + value
        elif kind == "list":
            for i, value in enumerate(redis.lrange(raw_key, 0, -1)):
                found[(key, f"[{i}]")] = value
        elif kind == "set":
            for i, value in enumerate(redis.smembers(raw_key)):
                found[(key, f"member {i}")] = value
        elif kind == "zset":
            for i, value in enumerate(redis.zrange(raw_key, 0, -1)):
                found[(key, f"member {i}")] = value
        elif kind == "stream":
            for entry_id, fields in redis.xrange(raw_key):
                found[(key, entry_id.decode())] = b" ".join(k + b"=" + v for k, v in fields.items())
    return found


def test_secrets_never_appear_in_logs_or_records(gateway, sample_image, figure):
    tenant = "sec-secrets"
    key = gateway.new_key(tenant)
    webhook_secret = KeyStore(gateway.stack.redis_client()).webhook_secret(tenant)
    receiver = Receiver()
    try:
        created = httpx.post(f"{gateway.url}/v1/jobs", headers=auth(key), json={
            "pipeline": "remix", "inputs": {"image": upload(gateway, key, sample_image.read_bytes()), **TINY_IMAGE},
            "webhook": {"url": receiver.url, "events": ["*"]}})
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        view = finished_view(gateway, key, job_id)
        assert view["status"] == "succeeded", view["error"]
        # Every route that handles a secret: events, the page link and its token, the output, a wrong key.
        assert httpx.get(f"{gateway.url}/v1/jobs/{job_id}/events", headers=auth(key)).status_code == 200
        page = view["links"]["page"]
        token = parse_qs(urlsplit(page).query)["token"][0]
        assert httpx.get(gateway.url + page).status_code == 200
        assert httpx.get(f"{gateway.url}/v1/jobs/{job_id}", params={"token": token}).status_code == 200
        assert httpx.get(f"{gateway.url}/v1/jobs/{job_id}/outputs/image", headers=auth(key)).status_code == 200
        near_miss = key[:-1] + ("A" if key[-1] != "A" else "B")
        assert httpx.get(f"{gateway.url}/v1/jobs", headers=auth(near_miss)).status_code == 401
        view = wait_for(lambda: httpx.get(f"{gateway.url}/v1/jobs/{job_id}", headers=auth(key)).json(),
                        until=lambda v: any(d["event"] == "job.succeeded" for d in v["deliveries"]))
        wait_for(lambda: any(json.loads(body)["type"] == "job.succeeded" for _, body in receiver.received))
    finally:
        receiver.server.shutdown()

    signature = parse_qs(urlsplit(view["outputs"]["image"]["url"]).query)["X-Amz-Signature"][0]
    lasting = {"API key": key, "API key's secret part": key.split("_", 2)[2], "webhook secret": webhook_secret,
               "webhook secret's random part": webhook_secret.removeprefix("whsec_"),
               "AWS_SECRET_ACCESS_KEY": gateway.stack.env["AWS_SECRET_ACCESS_KEY"]}
    # Short-lived, and shown to the key's holder by design (the view carries them), but never kept.
    secrets = {**lasting, "page token": token, "presigned URL signature": signature}
    # The job as the API shows it, and what the webhook receiver got (signatures, never the secret).
    shown = [json.dumps(view)] + [json.dumps(headers) + body.decode() for headers, body in receiver.received]
    assert [name for name, secret in lasting.items() if any(secret in text for text in shown)] == []

    stack = gateway.stack
    logs = {"gateway": gateway.log(), "redis": server_log(stack.redis.pid), "seaweedfs": server_log(stack.s3.pid),
            **{f"worker {w.specialisation} {w.process.pid}": w.log() for w in stack.workers}}
    in_logs = [(name, log_name) for name, secret in secrets.items() for log_name, text in logs.items()
               if secret in text]
    assert in_logs == [], f"secrets in logs: {in_logs}"

    contents = redis_contents(stack.redis_client())
    in_redis = sorted({(name, key_name, where) for (key_name, where), raw in contents.items()
                       for form in readable_forms(raw) for name, secret in secrets.items() if secret.encode() in form})
    # By design, and only there: the tenant's hash keeps its webhook secret, to sign each delivery
    # (the dispatcher needs it in the clear; it is never shown by the API nor sent to the receiver).
    by_design = {(name, f"mmq:tenant:{tenant}", "webhook_secret")
                 for name in ("webhook secret", "webhook secret's random part")}
    assert set(in_redis) == by_design, f"secrets in Redis: {sorted(set(in_redis) - by_design)}"
    # The key is stored as its SHA-256 only: the scan does reach the hash that holds it.
    digest = hashlib.sha256(key.encode()).hexdigest().encode()
    assert [k for (k, _), raw in contents.items() if digest in raw] == [f"mmq:apikey:{key.split('_')[1]}"]
    figure("Security: secrets in logs and records", load="1 remix job with a '*' webhook, events, page link",
           bad_inputs="1 wrong API key", lost=0,
           result=f"0 of {len(secrets)} secrets in {len(logs)} logs, {len(receiver.received)} webhook deliveries "
                  f"or {len({k for k, _ in contents})} Redis keys (the webhook secret only in its tenant's hash)")


# -- 5. Presigned URLs and page links expire -------------------------------------------------------

EXPIRY_S = 3


def test_presigned_urls_and_page_links_stop_working_after_expiry(workers, tmp_path, sample_image, figure):
    short = launch_gateway(workers, tmp_path, MMQ_PRESIGN_EXPIRY_S=str(EXPIRY_S))
    try:
        key = short.new_key("sec-expiry")
        created = httpx.post(f"{short.url}/v1/jobs", headers=auth(key),
                             json={"pipeline": "text2image", "inputs": {"prompt": "a kite", **TINY_IMAGE}})
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        assert finished_view(short, key, job_id)["status"] == "succeeded"
        issued = time.time()
        view = httpx.get(f"{short.url}/v1/jobs/{job_id}", headers=auth(key)).json()
        put_url = httpx.post(f"{short.url}/v1/uploads", json={}, headers=auth(key)).json()["url"]
        get_url, page = view["outputs"]["image"]["url"], view["links"]["page"]
        token = parse_qs(urlsplit(page).query)["token"][0]
        fresh = [httpx.get(get_url).status_code, httpx.get(short.url + page).status_code,
                 httpx.get(f"{short.url}/v1/jobs/{job_id}", params={"token": token}).status_code]
        assert fresh == [200, 200, 200]

        wait_for(lambda: time.time() > issued + EXPIRY_S + 1, timeout_s=EXPIRY_S + 30)
        expired_get = wait_for(lambda: httpx.get(get_url), until=lambda r: r.status_code != 200, timeout_s=30)
        assert expired_get.status_code in (400, 403), (expired_get.status_code, expired_get.text)
        expired_put = httpx.put(put_url, content=sample_image.read_bytes())
        assert expired_put.status_code in (400, 403), (expired_put.status_code, expired_put.text)
        expired_page = httpx.get(short.url + page)
        assert expired_page.status_code == 401 and "expired" in expired_page.text
        expired_api = error_of(httpx.get(f"{short.url}/v1/jobs/{job_id}", params={"token": token}), 401)
        assert expired_api["code"] == "unauthorized" and "expired" in expired_api["message"]
        # A fresh view gives fresh links that work again.
        renewed = httpx.get(f"{short.url}/v1/jobs/{job_id}", headers=auth(key)).json()
        assert httpx.get(renewed["outputs"]["image"]["url"]).status_code == 200
    finally:
        stop_gateway(short)
    figure("Security: presigned URLs and job page links expire", load=f"1 text2image job, links of {EXPIRY_S} s",
           bad_inputs="4 expired links (S3 GET, S3 PUT, job page, API with page token)", lost=0,
           result="all 4 worked fresh (PUT untried) and were refused once expired (S3 403/400, gateway 401)")


# -- 6. Oversized request bodies --------------------------------------------------------------------

CHUNK = b"x" * 65536
TOTAL_CHUNKS = 320  # 20 MiB


class CountedBody:
    """A 20 MiB JSON-ish body in 64 KiB chunks, counting how many were taken."""

    def __init__(self) -> None:
        self.taken = 0

    def next_chunk(self) -> bytes | None:
        if self.taken == TOTAL_CHUNKS:
            return None
        self.taken += 1
        return b'{"pipeline": "text2image", "inputs": {"prompt": "' + CHUNK if self.taken == 1 else CHUNK


def send_until_answered(url: str, headers: dict[str, str], body: CountedBody | None) -> tuple[int, dict]:
    """POST /v1/jobs over a raw socket: the headers, then (if `body`) chunks for as long as no answer
    has arrived. Returns the answer's status and JSON, read while the rest of the body is unsent."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = "".join(f"{name}: {value}\r\n" for name, value in {"Host": parts.netloc, **headers}.items())
    sock.sendall(f"POST /v1/jobs HTTP/1.1\r\n{head}\r\n".encode())
    while body is not None and not select.select([sock], [], [], 0)[0]:
        chunk = body.next_chunk()
        if chunk is None:
            sock.sendall(b"0\r\n\r\n")
            break
        try:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:  # the server closed the connection: its answer is waiting
            break
    response = http.client.HTTPResponse(sock)
    try:
        response.begin()
        return response.status, json.loads(response.read())
    finally:
        sock.close()


def test_an_oversized_body_is_refused_before_it_is_read_whole(workers, tmp_path, figure):
    limit = 65536
    small = launch_gateway(workers, tmp_path, MMQ_MAX_REQUEST_BYTES=str(limit))
    try:
        key = small.new_key("sec-big")
        headers = {**auth(key), "Content-Type": "application/json"}
        body = CountedBody()
        status, answer = send_until_answered(small.url, {**headers, "Transfer-Encoding": "chunked"}, body)
        assert (status, answer["error"]["code"]) == (413, "payload_too_large"), answer
        assert body.taken < TOTAL_CHUNKS / 2, f"{body.taken} of {TOTAL_CHUNKS} chunks sent before the answer"

        # Saying its length is enough: answered with no byte of the body sent.
        status, answer = send_until_answered(small.url, {**headers, "Content-Length": str(TOTAL_CHUNKS * len(CHUNK))},
                                             None)
        assert (status, answer["error"]["code"]) == (413, "payload_too_large"), answer

        # The gateway still serves requests under the limit.
        ok = httpx.post(f"{small.url}/v1/jobs", headers=auth(key),
                        json={"pipeline": "text2image", "inputs": {"prompt": "a boat", **TINY_IMAGE}})
        assert ok.status_code == 201, ok.text
    finally:
        stop_gateway(small)
    figure("Security: oversized request bodies", load=f"a {limit // 1024} KiB request limit",
           bad_inputs=f"a {TOTAL_CHUNKS * len(CHUNK) >> 20} MiB chunked body, a {TOTAL_CHUNKS * len(CHUNK) >> 20} MiB"
                      " declared body", lost=0,
           result=f"413 after {body.taken} of {TOTAL_CHUNKS} chunks sent; 413 with 0 bytes sent when declared; "
                  "a small job accepted after")
