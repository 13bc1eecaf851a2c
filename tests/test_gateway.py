"""The HTTP gateway end to end: a real gateway process over a real Redis, SeaweedFS S3 and real
caption and diffusion Celery workers. Faked: the model hub (tiny random models of the real
architectures) and the GPU (the code path is CPU here).

Covered: upload through a presigned URL, submit, server-sent events, download; the typed error
body of each refusal; API keys; tenant isolation; idempotency; URL inputs.
"""

import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from tests.conftest import launch_gateway

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REMIX = {"steps": 2, "width": 64, "height": 64, "seed": 5}


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def upload(gateway, key, data, media_type="image/png"):
    declared = {"media_type": media_type, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    created = httpx.post(f"{gateway.url}/v1/uploads", json=declared, headers=auth(key))
    assert created.status_code == 201, created.text
    put = httpx.put(created.json()["url"], content=data, headers=created.json()["headers"])
    assert put.status_code == 200, put.text
    return created.json()["input"]


def submit(gateway, key, pipeline, inputs, **extra):
    return httpx.post(f"{gateway.url}/v1/jobs", json={"pipeline": pipeline, "inputs": inputs},
                      headers={**auth(key), **extra.pop("headers", {})}, **extra)


def events(gateway, key, job_id, **params):
    """The server-sent events of a job, parsed: (id, name, data) until the stream ends."""
    seen, current = [], {}
    with httpx.stream("GET", f"{gateway.url}/v1/jobs/{job_id}/events", headers=auth(key), params=params,
                      timeout=180) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                field, _, value = line.partition(":")
                current[field] = value.strip()
            elif line == "" and "data" in current:
                seen.append((current["id"], current["event"], json.loads(current["data"])))
                current = {}
    return seen


def error_of(response, status):
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.fixture(scope="module")
def key(gateway):
    return gateway.new_key("acme")


def test_upload_remix_follow_events_and_download(gateway, key, sample_image):
    image = upload(gateway, key, sample_image.read_bytes())
    created = submit(gateway, key, "remix", {"image": image, **REMIX})
    assert created.status_code == 201, created.text
    job = created.json()
    # (A warm worker may have started it by the time the record is read back.)
    assert job["status"] in ("queued", "running") and [s["name"] for s in job["steps"]] == ["caption", "text2image"]
    assert job["inputs"]["image"]["uri"].startswith("s3://mmq-test/tenants/acme/")  # the tenant's prefix

    stream = events(gateway, key, job["id"])
    names = [name for _, name, _ in stream]
    assert names[0] == "job.queued" and names[-1] == "job.succeeded"
    assert {"job.running", "step.running", "step.progress", "step.succeeded"} <= set(names)
    progress = [data["progress"] for _, name, data in stream if name == "step.progress"
                and data["step"] == "text2image"]
    assert progress == sorted(progress) and progress[-1][0] == progress[-1][1]

    done = httpx.get(f"{gateway.url}/v1/jobs/{job['id']}", headers=auth(key)).json()
    assert done["status"] == "succeeded" and done["outputs"]["caption"].strip()
    output = httpx.get(f"{gateway.url}/v1/jobs/{job['id']}/outputs/image", headers=auth(key))
    assert output.status_code == 200 and output.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(output.content)).size == (64, 64)
    presigned = httpx.get(done["outputs"]["image"]["url"])  # the presigned URL alone is enough
    assert presigned.status_code == 200 and presigned.content == output.content
    assert done["outputs"]["image"]["uri"].startswith("s3://mmq-test/tenants/acme/blobs/")

    # Resuming after an event id, once the job has ended, gives its end event (kept in the record;
    # the stream of its progress is gone).
    later = events(gateway, key, job["id"], after=stream[2][0])
    assert [(event_id, name) for event_id, name, _ in later] == [stream[-1][:2]]


def test_job_list_is_paginated_newest_first(gateway):
    key = gateway.new_key("lister")
    ids = []
    for seed in range(3):
        response = submit(gateway, key, "text2image", {"prompt": "a boat", "steps": 1, "width": 64,
                                                       "height": 64, "seed": seed})
        ids.append(response.json()["id"])
    first = httpx.get(f"{gateway.url}/v1/jobs", params={"limit": 2}, headers=auth(key)).json()
    assert [job["id"] for job in first["jobs"]] == ids[::-1][:2] and first["next_cursor"]
    rest = httpx.get(f"{gateway.url}/v1/jobs", params={"limit": 2, "cursor": first["next_cursor"]},
                     headers=auth(key)).json()
    assert [job["id"] for job in rest["jobs"]] == [ids[0]] and rest["next_cursor"] is None


def test_missing_wrong_and_revoked_keys_are_401(gateway, key):
    from mmq.clients.keys import KeyStore

    assert error_of(httpx.get(f"{gateway.url}/v1/jobs"), 401)["code"] == "unauthorized"
    wrong = error_of(httpx.get(f"{gateway.url}/v1/jobs", headers=auth(key[:-3] + "xyz")), 401)
    assert wrong == {"code": "unauthorized", "message": "unknown API key"}
    store = KeyStore(gateway.stack.redis_client())
    revoked_key = gateway.new_key("acme")
    assert httpx.get(f"{gateway.url}/v1/jobs", headers=auth(revoked_key)).status_code == 200
    store.revoke(revoked_key.split("_")[1])
    assert "revoked" in error_of(httpx.get(f"{gateway.url}/v1/jobs", headers=auth(revoked_key)), 401)["message"]
    # Keys are stored hashed: the plaintext is nowhere in Redis.
    redis = gateway.stack.redis_client()
    assert not any(key.encode() in b"".join(v for v in redis.hgetall(k).values())
                   for k in redis.scan_iter("mmq:apikey:*"))


def test_a_tenant_sees_nothing_of_another(gateway, key, sample_image):
    image = upload(gateway, key, sample_image.read_bytes())
    job = submit(gateway, key, "caption", {"image": image}).json()
    other = gateway.new_key("globex")
    unknown = error_of(httpx.get(f"{gateway.url}/v1/jobs/{'0' * 32}", headers=auth(other)), 404)
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/events"), ("GET", "/outputs/text")):
        refused = error_of(httpx.request(method, f"{gateway.url}/v1/jobs/{job['id']}{path}", headers=auth(other)), 404)
        assert refused == {**unknown, "message": unknown["message"].replace("0" * 32, job["id"])}
    assert job["id"] not in [j["id"] for j in httpx.get(f"{gateway.url}/v1/jobs", headers=auth(other)).json()["jobs"]]
    # Neither acme's upload nor acme's artifacts can be used as globex's inputs.
    stolen_upload = error_of(submit(gateway, other, "caption", {"image": image}), 422)
    assert stolen_upload["field"] == "image" and "not uploaded yet, or not yours" in stolen_upload["message"]
    stolen_ref = {k: v for k, v in job["inputs"]["image"].items() if k != "url"}
    assert error_of(submit(gateway, other, "caption", {"image": stolen_ref}), 422)["field"] == "image"
    climbing = {**stolen_ref, "uri": "s3://mmq-test/tenants/globex/../acme/" + stolen_ref["uri"].rsplit("/", 1)[1]}
    assert "not one of your artifacts" in error_of(submit(gateway, other, "caption", {"image": climbing}), 422)["message"]
    # The owner may reuse its own artifact by reference.
    again = submit(gateway, key, "caption", {"image": stolen_ref})
    assert again.status_code == 201, again.text


@pytest.mark.parametrize("pipeline, inputs, status, code, field", [
    ("text2image", {"prompt": "a boat", "steps": 0}, 422, "invalid_input", "steps"),
    ("text2image", {"prompt": "a boat", "width": 100}, 422, "invalid_input", "width"),
    ("text2image", {"promt": "a boat"}, 422, "invalid_input", "promt"),
    ("text2image", {}, 422, "invalid_input", "prompt"),
    ("caption", {"image": {"upload": "not-an-id"}}, 422, "invalid_input", "image"),
    ("caption", {"image": {"file": "x.png"}}, 422, "invalid_input", "image"),
    ("no-such-pipeline", {}, 404, "unknown_pipeline", None),
    ({"name": "p", "steps": [{"name": "a", "task": "nope"}]}, {}, 422, "invalid_pipeline", None),
])
def test_refusals_are_typed_and_name_the_field(gateway, key, pipeline, inputs, status, code, field):
    error = error_of(submit(gateway, key, pipeline, inputs), status)
    assert error["code"] == code and error.get("field") == field, error
    assert error["message"]


def test_a_body_that_is_not_json_is_400_and_a_malformed_request_422_naming_the_field(gateway, key):
    for body in (b"{not json", b'{"pipeline": "caption\xff"}'):  # not JSON; not UTF-8
        broken = httpx.post(f"{gateway.url}/v1/jobs", content=body, headers={
            **auth(key), "Content-Type": "application/json"})
        error = error_of(broken, 400)
        assert error["code"] == "invalid_request" and error["message"].startswith("the request body is not JSON")
    extra = error_of(httpx.post(f"{gateway.url}/v1/jobs", json={"pipeline": "caption", "input": {}},
                                headers=auth(key)), 422)
    assert extra["code"] == "invalid_request" and extra["field"] == "input"
    hook = error_of(httpx.post(f"{gateway.url}/v1/jobs", headers=auth(key), json={
        "pipeline": "caption", "inputs": {}, "webhook": {"url": "ftp://x"}}), 422)
    assert hook["field"] == "webhook.url"


def test_oversized_uploads_and_bodies_are_413(workers, tmp_path, sample_image):
    small = launch_gateway(workers, tmp_path, MMQ_MAX_UPLOAD_BYTES="2000", MMQ_MAX_REQUEST_BYTES="4096",
                           MMQ_ALLOW_PRIVATE_URLS="1")
    try:
        key = small.new_key("acme")
        declared = httpx.post(f"{small.url}/v1/uploads", json={"media_type": "image/png", "size": 2001},
                              headers=auth(key))
        assert error_of(declared, 413) == {"code": "payload_too_large", "field": "size", "message":
                                           "size: 2001 bytes is over the limit of 2000 (MMQ_MAX_UPLOAD_BYTES)"}
        # A file bigger than it said, uploaded without a declared checksum (which S3 would hold it to):
        # refused when the job that uses it is submitted.
        big = Image.new("RGB", (200, 200))
        big.putdata([(i % 251, i % 241, i % 239) for i in range(200 * 200)])
        buffer = io.BytesIO()
        big.save(buffer, format="PNG")
        created = httpx.post(f"{small.url}/v1/uploads", json={}, headers=auth(key)).json()
        assert httpx.put(created["url"], content=buffer.getvalue()).status_code == 200
        refused = error_of(submit(small, key, "caption", {"image": created["input"]}), 413)
        assert refused["field"] == "image" and "2000 bytes" in refused["message"]
        # A request body over the limit, with or without a length: refused before it is read whole.
        body = json.dumps({"pipeline": "text2image", "inputs": {"prompt": "x" * 5000}}).encode()
        assert error_of(httpx.post(f"{small.url}/v1/jobs", content=body, headers={
            **auth(key), "Content-Type": "application/json"}), 413)["code"] == "payload_too_large"
        chunked = httpx.post(f"{small.url}/v1/jobs", content=iter([body[:3000], body[3000:]]),
                             headers={**auth(key), "Content-Type": "application/json"})
        assert error_of(chunked, 413)["code"] == "payload_too_large"
        # A small file is fine on the same gateway.
        ok = submit(small, key, "caption", {"image": upload(small, key, sample_image.read_bytes())})
        assert ok.status_code == 201, ok.text
    finally:
        small.process.terminate()
        small.process.wait(timeout=20)


def test_idempotency_key_returns_the_same_job(gateway, key):
    inputs = {"prompt": "a lighthouse", "steps": 1, "width": 64, "height": 64, "seed": 11}
    first = submit(gateway, key, "text2image", inputs, headers={"Idempotency-Key": "order-1"})
    again = submit(gateway, key, "text2image", inputs, headers={"Idempotency-Key": "order-1"})
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    other_tenant = submit(gateway, gateway.new_key("initech"), "text2image", inputs,
                          headers={"Idempotency-Key": "order-1"})
    assert other_tenant.json()["id"] != first.json()["id"]  # keys are per tenant
    changed = submit(gateway, key, "text2image", {**inputs, "seed": 12}, headers={"Idempotency-Key": "order-1"})
    assert error_of(changed, 409)["code"] == "idempotency_conflict"
    listed = httpx.get(f"{gateway.url}/v1/jobs", params={"limit": 100}, headers=auth(key)).json()["jobs"]
    assert [j["id"] for j in listed].count(first.json()["id"]) == 1


class _FileServer(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 - the http.server API
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_a_file_input_by_url_is_fetched(gateway, key, sample_image, workers, tmp_path):
    handler = type("Handler", (_FileServer,), {"body": sample_image.read_bytes()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/house.png"
        job = submit(gateway, key, "caption", {"image": {"url": url}}).json()
        assert job["inputs"]["image"]["size"] == len(handler.body)
        # A gateway that allows only public URLs refuses the same input, naming it.
        strict = launch_gateway(workers, tmp_path)
        try:
            refused = error_of(submit(strict, strict.new_key("acme"), "caption", {"image": {"url": url}}), 422)
            assert refused["field"] == "image" and "private address" in refused["message"]
        finally:
            strict.process.terminate()
            strict.process.wait(timeout=20)
    finally:
        server.shutdown()


def test_catalogue_and_openapi_document(gateway):
    from pathlib import Path

    catalogue = httpx.get(f"{gateway.url}/v1/pipelines").json()["pipelines"]
    remix = next(entry for entry in catalogue if entry["name"] == "remix")
    assert remix["inputs"]["image"]["kind"] == "image" and remix["outputs"]
    served = httpx.get(f"{gateway.url}/openapi.json").json()
    committed = json.loads((Path(__file__).parent.parent / "docs" / "openapi.json").read_text())
    assert served == committed, "docs/openapi.json is stale: run `make openapi`"
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/v1/uploads",
            "/v1/pipelines"} <= set(served["paths"])
