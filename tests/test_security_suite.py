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
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from kombu import Connection, Exchange, Queue

from mmq.clients import Client
from mmq.clients.client import Job
from mmq.clients.keys import KeyStore
from mmq.tasks import JobStatus
from mmq.tasks.artifacts import ArtifactRef, ArtifactStore
from mmq.tasks.errors import ArtifactNotFound, InvalidInput, JobNotFound
from mmq.tasks.settings import Settings
from mmq.tasks.tenants import artifact_prefix, key_within
from tests.conftest import launch_gateway
from tests.test_webhooks import Receiver

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


def submit(gateway, key: str, inputs: dict, pipeline: str = "caption", **extra) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/jobs", headers=auth(key),
                      json={"pipeline": pipeline, "inputs": inputs, **extra})


def finished_view(gateway, key: str, job_id: str) -> dict:
    return wait_for(lambda: httpx.get(f"{gateway.url}/v1/jobs/{job_id}", headers=auth(key)).json(),
                    until=lambda view: view["status"] in ("succeeded", "failed", "cancelled"))


def job_ids(gateway, key: str) -> list[str]:
    page = httpx.get(f"{gateway.url}/v1/jobs", params={"limit": 100}, headers=auth(key)).json()
    return [job["id"] for job in page["jobs"]]


def upload(gateway, key: str, data: bytes) -> dict[str, str]:
    created = httpx.post(f"{gateway.url}/v1/uploads", json={"media_type": "image/png", "size": len(data)},
                         headers=auth(key))
    assert created.status_code == 201, created.text
    assert httpx.put(created.json()["url"], content=data).status_code == 200
    return created.json()["input"]


def input_ref(response: httpx.Response) -> dict:
    """The artifact reference of a submitted job's `image` input, without its presigned URL."""
    assert response.status_code == 201, response.text
    return {k: v for k, v in response.json()["inputs"]["image"].items() if k != "url"}


def stop_gateway(running) -> None:
    running.process.terminate()
    running.process.wait(timeout=20)


# -- 1. YAML objects on a queue -------------------------------------------------------------------

# Each body, if it were loaded with an unsafe YAML loader, would run a command creating the marker.
YAML_ATTACKS = {
    "caption": ("mmq.caption", '!!python/object/apply:os.system ["touch {marker}"]'),
    "diffusion": ("mmq.text2image", '!!python/object/apply:subprocess.check_call [["touch", "{marker}"]]'),
}
# Celery logs this once per refused message, followed by the body it discarded.
YAML_REFUSAL = "Received invalid task message: Refusing to deserialize untrusted content of type yaml"


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


@pytest.mark.reliability
def test_a_yaml_object_message_is_not_executed(workers, client, sample_image, tmp_path, figure):
    served_by = {w.specialisation: w for w in workers.workers if w.specialisation in YAML_ATTACKS}
    before = {name: worker.log().count(YAML_REFUSAL) for name, worker in served_by.items()}
    markers = {queue: tmp_path / f"pwned-{queue}" for queue in YAML_ATTACKS}
    for queue, (task, template) in YAML_ATTACKS.items():
        body = template.format(marker=markers[queue]).encode()
        publish_raw(workers.env["MMQ_BROKER_URL"], queue, task, body, "application/x-yaml")

    # Each queue is first in, first out: once a later good job is done, the YAML was dealt with.
    good = [client.submit("caption", image=sample_image),
            client.submit("text2image", prompt="a boat", **TINY_IMAGE)]
    records = [job.wait(timeout_s=120) for job in good]
    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 2, [r.error for r in records]
    assert not any(marker.exists() for marker in markers.values())
    refused = {name: worker.log().count(YAML_REFUSAL) - before[name] for name, worker in served_by.items()}
    assert refused == {"caption": 1, "diffusion": 1}, refused
    assert all(str(markers[name]) in worker.log() for name, worker in served_by.items())  # these very ones
    assert all(worker.process.poll() is None for worker in served_by.values())
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
    "tenants/acme/./x",  # not normalised: SeaweedFS serves "a//b" and "/a" as "a/b" and "a"
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


@pytest.mark.reliability
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
           lost=0, result=f"{len(ESCAPES) - len(accepted)}/{len(ESCAPES)} refused, "
                          f"{len(INSIDE) - len(refused_inside)}/{len(INSIDE)} inside accepted")


def escaping_uris(attacker: str, victim_key: str, bucket: str) -> list[str]:
    """URIs that try to name `victim_key` (or anything outside the attacker's prefix) as its own."""
    own, victim = artifact_prefix(attacker), victim_key.split("/")[1]
    rest = victim_key.removeprefix(artifact_prefix(victim))
    return [
        f"s3://{bucket}/{victim_key}",  # plainly another tenant's
        f"s3://{bucket}/{own}../{victim}/{rest}",
        f"s3://{bucket}/{own}x/../../{victim}/{rest}",
        f"s3://{bucket}/{own}./../{victim}/{rest}",
        f"s3://{bucket}/{own}.",
        f"s3://{bucket}//{victim_key}",  # absolute keys
        f"s3://{bucket}//etc/passwd",
        f"s3://{bucket}/{own}/x",  # tenants/<attacker>//x
        f"s3://{bucket}/{own}..\\{victim}\\" + rest.replace("/", "\\"),  # backslashes
        f"s3://{bucket}/{own}x\x00/../../{victim}/{rest}",  # NUL
        f"s3://{bucket}/",
        f"s3://other-bucket/{own}x",  # another bucket
        f"s3://other-bucket/{victim_key}",
        "/etc/passwd",  # not s3:// at all
        "file:///etc/passwd",
        f"S3://{bucket}/{own}x",
        f"s3://{bucket}",
    ]


@pytest.mark.reliability
def test_artifact_references_cannot_escape_the_tenant_prefix(gateway, sample_image, figure):
    # The victim's name extends the attacker's: a prefix check without its "/" would let it through.
    attacker, victim = "sec-acme", "sec-acmex"
    attacker_key, victim_key = gateway.new_key(attacker), gateway.new_key(victim)
    bucket, image = gateway.stack.env["MMQ_S3_BUCKET"], sample_image.read_bytes()
    victim_ref = input_ref(submit(gateway, victim_key, {"image": upload(gateway, victim_key, image)}))
    victim_object = victim_ref["uri"].removeprefix(f"s3://{bucket}/")
    # The attacker's own artifact, by reference, is accepted: the refusals below are about the key.
    own = submit(gateway, attacker_key, {"image": upload(gateway, attacker_key, image)})
    again = submit(gateway, attacker_key, {"image": input_ref(own)})
    assert again.status_code == 201, again.text
    redis = gateway.stack.redis_client()
    jobs_before = redis.zcard("mmq:jobs:all")

    attempts = escaping_uris(attacker, victim_object, bucket)
    answers = [(uri, submit(gateway, attacker_key, {"image": {**victim_ref, "uri": uri}}))
               for uri in attempts]
    wrong = [(uri, r.status_code, r.text) for uri, r in answers if r.status_code != 422
             or (r.json()["error"]["code"], r.json()["error"].get("field")) != ("invalid_input", "image")]
    assert wrong == [], wrong
    assert job_ids(gateway, attacker_key) == [again.json()["id"], own.json()["id"]]
    assert redis.zcard("mmq:jobs:all") == jobs_before  # no job created, owned or not

    # A percent-encoded ".." is a literal name to S3, not a way up: such a key lies under the prefix
    # (key_within accepts it) and names nothing of the victim's, whose object is there all along.
    rest = victim_object.removeprefix(artifact_prefix(victim))
    literal = f"{artifact_prefix(attacker)}%2e%2e/{victim}/{rest}"
    assert key_within(literal, artifact_prefix(attacker))
    store = ArtifactStore.from_settings(gateway.stack.settings)
    with pytest.raises(ArtifactNotFound):
        store.get_bytes(ArtifactRef.from_dict({**victim_ref, "uri": f"s3://{bucket}/{literal}"}))
    assert store.get_bytes(ArtifactRef.from_dict(victim_ref)) == image
    figure("Security: artifact references outside the tenant prefix, through the gateway",
           load="2 tenants (one name a prefix of the other), 2 accepted jobs by own reference",
           bad_inputs=f"{len(attempts)} escaping artifact URIs, 1 percent-encoded '..'", lost=0,
           result=f"{len(attempts) - len(wrong)}/{len(attempts)} refused 422 naming the input, "
                  "0 jobs created; '%2e%2e' stays a literal name")


# -- 3. Tenant isolation through the SDK ----------------------------------------------------------

@pytest.mark.reliability
def test_a_tenant_sees_nothing_of_another_through_the_sdk(gateway, figure):
    owner_key, intruder_key = gateway.new_key("sdk-owner"), gateway.new_key("sdk-intruder")
    with Client(gateway_url=gateway.url, api_key=owner_key) as owner, \
            Client(gateway_url=gateway.url, api_key=intruder_key) as intruder:
        job = owner.submit("text2image", prompt="a lighthouse", **TINY_IMAGE)
        with pytest.raises(JobNotFound):  # while it is queued or running
            intruder.cancel(job.id)
        assert job.wait(timeout_s=120).status is JobStatus.SUCCEEDED  # the intruder's cancel did nothing
        image = job.outputs["image"]

        attempts = [lambda: intruder.job(job.id), lambda: intruder.cancel(job.id),
                    lambda: Job(job.id, intruder).record(), lambda: Job(job.id, intruder).outputs,
                    lambda: list(Job(job.id, intruder).events())]
        for attempt in attempts:
            with pytest.raises(JobNotFound):
                attempt()
        assert job.id not in [j.id for j in intruder.jobs(limit=100)[0]]
        with pytest.raises(InvalidInput) as stolen:  # the owner's output as the intruder's input
            intruder.submit("caption", image=image)
        assert stolen.value.field == "image"
        output_url = f"{gateway.url}/v1/jobs/{job.id}/outputs/image"
        assert error_of(httpx.get(output_url, headers=auth(intruder_key)), 404)["code"] == "job_not_found"

        # The owner still has all of it.
        assert owner.job(job.id).status() is JobStatus.SUCCEEDED and job in owner.jobs(limit=100)[0]
        downloaded = httpx.get(output_url, headers=auth(owner_key))
        assert downloaded.status_code == 200 and downloaded.content == image.read()
    refused = 1 + len(attempts) + 3  # the early cancel, the attempts, the listing, the reuse, the download
    figure("Security: tenant isolation through the SDK", load="1 text2image job of one tenant",
           bad_inputs=f"{refused} reads, cancels, listings and reuses by another tenant", lost=0,
           result=f"{refused}/{refused} refused (JobNotFound, InvalidInput, 404); "
                  "the job succeeded untouched")


# -- 4. Secrets stay out of logs and records ------------------------------------------------------

def server_log(pid: int) -> str:
    """The log of a server started by `mmq.clients.servers`: its standard output is that file."""
    return Path(os.readlink(f"/proc/{pid}/fd/1")).read_text(errors="replace")


def readable_forms(raw: bytes) -> list[bytes]:
    """`raw`, and what it holds base64-encoded inside JSON (Celery messages carry their body so)."""
    forms = [raw]
    try:
        pending = [json.loads(raw)]
    except ValueError:
        return forms
    while pending:
        item = pending.pop()
        if isinstance(item, dict | list):
            pending.extend(item.values() if isinstance(item, dict) else item)
        elif isinstance(item, str) and len(item) >= 16 and len(item) % 4 == 0:
            try:
                forms.extend(readable_forms(base64.b64decode(item, validate=True)))
            except (binascii.Error, ValueError):
                pass
    return forms


def redis_contents(redis) -> dict[tuple[str, str], bytes]:
    """Every value in Redis as {(key, where): bytes}: strings, hash fields, list, set, zset and
    stream members, and the key names themselves."""
    found: dict[tuple[str, str], bytes] = {}
    for raw_key in redis.scan_iter(count=1000):
        key, kind = raw_key.decode(errors="replace"), redis.type(raw_key).decode()
        found[(key, "name")] = raw_key
        if kind == "string":
            found[(key, "value")] = redis.get(raw_key) or b""
        elif kind == "hash":
            found.update({(key, field.decode(errors="replace")): field + b"=" + value
                          for field, value in redis.hgetall(raw_key).items()})
        elif kind in ("list", "set", "zset"):
            members = {"list": lambda: redis.lrange(raw_key, 0, -1), "set": lambda: redis.smembers(raw_key),
                       "zset": lambda: redis.zrange(raw_key, 0, -1)}[kind]()
            found.update({(key, f"member {i}"): value for i, value in enumerate(members)})
        elif kind == "stream":
            found.update({(key, entry_id.decode()): b" ".join(k + b"=" + v for k, v in fields.items())
                          for entry_id, fields in redis.xrange(raw_key)})
    return found


def run_with_webhook(gateway, key: str, image: bytes) -> tuple[dict, str, list]:
    """A remix job with a webhook for every event, and every route that handles a secret used on it:
    events, the page link and its token, the output, a near-miss key. Its view, page token, and
    what the receiver got."""
    receiver = Receiver(fail_first=0)
    try:
        created = submit(gateway, key, {"image": upload(gateway, key, image), **TINY_IMAGE}, pipeline="remix",
                         webhook={"url": receiver.url, "events": ["*"]})
        assert created.status_code == 201, created.text
        job = f"{gateway.url}/v1/jobs/{created.json()['id']}"
        view = finished_view(gateway, key, created.json()["id"])
        assert view["status"] == "succeeded", view["error"]
        token = parse_qs(urlsplit(view["links"]["page"]).query)["token"][0]
        near_miss = key[:-1] + ("A" if key[-1] != "A" else "B")
        statuses = [httpx.get(f"{job}/events", headers=auth(key)).status_code,
                    httpx.get(gateway.url + view["links"]["page"]).status_code,
                    httpx.get(job, params={"token": token}).status_code,
                    httpx.get(f"{job}/outputs/image", headers=auth(key)).status_code,
                    httpx.get(f"{gateway.url}/v1/jobs", headers=auth(near_miss)).status_code]
        assert statuses == [200, 200, 200, 200, 401]
        view = wait_for(lambda: httpx.get(job, headers=auth(key)).json(),
                        until=lambda v: any(d["event"] == "job.succeeded" for d in v["deliveries"]))
        wait_for(lambda: any(json.loads(body)["type"] == "job.succeeded" for _, _, body in receiver.received))
        return view, token, [(headers, body) for _, headers, body in receiver.received]
    finally:
        receiver.server.shutdown()


@pytest.mark.reliability
def test_secrets_never_appear_in_logs_or_records(gateway, sample_image, figure):
    tenant = "sec-secrets"
    key = gateway.new_key(tenant)
    webhook_secret = KeyStore(gateway.stack.redis_client()).webhook_secret(tenant)
    view, token, received = run_with_webhook(gateway, key, sample_image.read_bytes())

    lasting = {"API key": key, "API key's secret part": key.split("_", 2)[2],
               "webhook secret": webhook_secret,
               "webhook secret's random part": webhook_secret.removeprefix("whsec_"),
               "AWS_SECRET_ACCESS_KEY": gateway.stack.env["AWS_SECRET_ACCESS_KEY"]}
    # Short-lived ones, shown to the key's holder by design (the view carries them), but never kept.
    signature = parse_qs(urlsplit(view["outputs"]["image"]["url"]).query)["X-Amz-Signature"][0]
    secrets = {**lasting, "page token": token, "presigned URL signature": signature}
    # The job as the API shows it, and what the webhook receiver got (signed, never the secret).
    shown = [json.dumps(view)] + [json.dumps(headers) + body.decode() for headers, body in received]
    assert [name for name, secret in lasting.items() if any(secret in text for text in shown)] == []

    stack = gateway.stack
    logs = {"gateway": gateway.log(), "redis": server_log(stack.redis.pid),
            "seaweedfs": server_log(stack.s3.pid),
            **{f"worker {w.specialisation} {w.process.pid}": w.log() for w in stack.workers}}
    in_logs = [(name, where) for name, secret in secrets.items() for where, text in logs.items()
               if secret in text]
    assert in_logs == [], f"secrets in logs: {in_logs}"

    contents = redis_contents(stack.redis_client())
    in_redis = {(name, redis_key, where) for (redis_key, where), raw in contents.items()
                for form in readable_forms(raw) for name, secret in secrets.items()
                if secret.encode() in form}
    # By design, and only there: the tenant's hash keeps its webhook secret, to sign each delivery
    # (the dispatcher needs it in the clear; the API never shows it and the receiver never gets it).
    by_design = {(name, f"mmq:tenant:{tenant}", "webhook_secret")
                 for name in ("webhook secret", "webhook secret's random part")}
    assert in_redis == by_design, f"secrets in Redis: {sorted(in_redis - by_design)}"
    # The key is kept as its SHA-256 only, and the scan does reach the hash that holds that.
    digest = hashlib.sha256(key.encode()).hexdigest().encode()
    assert [k for (k, _), raw in contents.items() if digest in raw] == [f"mmq:apikey:{key.split('_')[1]}"]
    figure("Security: secrets in logs and records", load="1 remix job with a '*' webhook, events, page link",
           bad_inputs="1 near-miss API key", lost=0,
           result=f"{len(in_logs) + len(in_redis - by_design)} of {len(secrets)} secrets in "
                  f"{len(logs)} logs, "
                  f"{len(received)} webhook deliveries or {len({k for k, _ in contents})} Redis keys "
                  "(the webhook secret only in its tenant's hash)")


# -- 5. Presigned URLs and page links expire; the artifact store checks signatures ----------------

EXPIRY_S = 3


def refused_by_s3(response: httpx.Response) -> bool:
    return response.status_code in (400, 403) and "<Error>" in response.text


@pytest.mark.reliability
def test_presigned_urls_and_page_links_stop_working_after_expiry(workers, tmp_path, sample_image, figure):
    short = launch_gateway(workers, tmp_path, MMQ_PRESIGN_EXPIRY_S=str(EXPIRY_S))
    try:
        key = short.new_key("sec-expiry")
        created = submit(short, key, {"prompt": "a kite", **TINY_IMAGE}, pipeline="text2image")
        assert created.status_code == 201, created.text
        job = f"{short.url}/v1/jobs/{created.json()['id']}"
        assert finished_view(short, key, created.json()["id"])["status"] == "succeeded"
        issued = time.time()
        view = httpx.get(job, headers=auth(key)).json()
        put_url = httpx.post(f"{short.url}/v1/uploads", json={}, headers=auth(key)).json()["url"]
        get_url, page = view["outputs"]["image"]["url"], short.url + view["links"]["page"]
        token = parse_qs(urlsplit(page).query)["token"][0]
        fresh = [httpx.get(get_url), httpx.get(page), httpx.get(job, params={"token": token})]
        assert [r.status_code for r in fresh] == [200, 200, 200]

        wait_for(lambda: time.time() > issued + EXPIRY_S + 1, timeout_s=EXPIRY_S + 30)
        expired_page = httpx.get(page)
        assert expired_page.status_code == 401 and "expired" in expired_page.text
        expired_api = error_of(httpx.get(job, params={"token": token}), 401)
        assert expired_api["code"] == "unauthorized" and "expired" in expired_api["message"]
        deadline = time.monotonic() + 10  # S3 judges by its own clock: allow it a little skew
        while not refused_by_s3(expired_get := httpx.get(get_url)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert refused_by_s3(expired_get), (
            f"a presigned GET with a {EXPIRY_S} s lifetime still answers {expired_get.status_code} "
            f"{time.time() - issued:.0f} s after issue")
        expired_put = httpx.put(put_url, content=sample_image.read_bytes())
        assert refused_by_s3(expired_put), f"an expired presigned PUT answered {expired_put.status_code}"
        # A fresh view gives fresh links that work again.
        renewed = httpx.get(job, headers=auth(key)).json()
        assert httpx.get(renewed["outputs"]["image"]["url"]).status_code == 200
    finally:
        stop_gateway(short)
    figure("Security: presigned URLs and job page links expire",
           load=f"1 text2image job, links of {EXPIRY_S} s",
           bad_inputs="4 expired links (S3 GET, S3 PUT, job page, API with page token)", lost=0,
           result="fresh links worked; all 4 refused once expired (gateway 401, S3 403/400)")


@pytest.mark.reliability
def test_the_artifact_store_refuses_unsigned_and_wrongly_signed_requests(gateway, sample_image, figure):
    tenant = "sec-signed"
    key = gateway.new_key(tenant)
    created = submit(gateway, key, {"image": upload(gateway, key, sample_image.read_bytes())})
    ref = ArtifactRef.from_dict(input_ref(created))
    assert httpx.get(created.json()["inputs"]["image"]["url"]).status_code == 200  # signed by the gateway
    bucket_url = f"{gateway.stack.env['MMQ_S3_ENDPOINT_URL']}/{ref.bucket}"
    guessed = ArtifactStore.from_settings(Settings.from_env({**gateway.stack.env,
                                                             "AWS_SECRET_ACCESS_KEY": "guessed"}))
    attempts = {"unsigned GET": httpx.get(f"{bucket_url}/{ref.key}"),
                "GET signed with a wrong secret": httpx.get(guessed.presigned_url(ref)),
                "unsigned PUT of a new object": httpx.put(f"{bucket_url}/{artifact_prefix(tenant)}planted",
                                                          content=b"planted"),
                "unsigned listing of the bucket": httpx.get(bucket_url)}
    served = {what: answer.status_code for what, answer in attempts.items() if not refused_by_s3(answer)}
    assert served == {}, f"the artifact store served requests without a valid signature: {served}"
    figure("Security: the artifact store checks signatures", load="1 uploaded image",
           bad_inputs=f"{len(attempts)} unsigned or wrongly signed S3 requests", lost=0,
           result=f"{len(attempts) - len(served)}/{len(attempts)} refused")


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
    has arrived. Returns the answer's status and JSON, read while the rest of the body is unsent.
    (httpx would send the whole body first: uvicorn reads and drops the rest after a 413.)"""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = "".join(f"{name}: {value}\r\n" for name, value in {"Host": parts.netloc, **headers}.items())
    sock.sendall(f"POST /v1/jobs HTTP/1.1\r\n{head}\r\n".encode())
    while body is not None and not select.select([sock], [], [], 0)[0]:
        chunk = body.next_chunk()
        try:
            sock.sendall(b"0\r\n\r\n" if chunk is None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:  # the server closed the connection: its answer is waiting
            break
        if chunk is None:
            break
    response = http.client.HTTPResponse(sock)
    try:
        response.begin()
        return response.status, json.loads(response.read())
    finally:
        sock.close()


@pytest.mark.reliability
def test_an_oversized_body_is_refused_before_it_is_read_whole(workers, tmp_path, figure):
    limit, total_mib = 65536, TOTAL_CHUNKS * len(CHUNK) >> 20
    small = launch_gateway(workers, tmp_path, MMQ_MAX_REQUEST_BYTES=str(limit))
    try:
        key = small.new_key("sec-big")
        headers = {**auth(key), "Content-Type": "application/json"}
        body = CountedBody()
        status, answer = send_until_answered(small.url, {**headers, "Transfer-Encoding": "chunked"}, body)
        assert (status, answer["error"]["code"]) == (413, "payload_too_large"), answer
        assert body.taken < TOTAL_CHUNKS / 2, f"{body.taken} of {TOTAL_CHUNKS} chunks sent before the answer"

        # Saying its length is enough: answered with no byte of the body sent.
        declared = {**headers, "Content-Length": str(TOTAL_CHUNKS * len(CHUNK))}
        status, answer = send_until_answered(small.url, declared, None)
        assert (status, answer["error"]["code"]) == (413, "payload_too_large"), answer

        # The gateway still serves requests under the limit.
        ok = submit(small, key, {"prompt": "a boat", **TINY_IMAGE}, pipeline="text2image")
        assert ok.status_code == 201, ok.text
    finally:
        stop_gateway(small)
    figure("Security: oversized request bodies", load=f"a {limit // 1024} KiB request limit",
           bad_inputs=f"a {total_mib} MiB chunked body, a {total_mib} MiB declared body", lost=0,
           result=f"413 after {body.taken} of {TOTAL_CHUNKS} chunks sent; "
                  "413 with 0 bytes sent when declared; a small job accepted after")
