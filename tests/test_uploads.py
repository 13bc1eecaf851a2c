"""Uploads through the gateway: a file PUT to a presigned URL becomes a job input without the gateway
reading it, is deleted once used, and is deleted unused after its expiry; S3 itself refuses a body
other than the one declared.

Real: Redis, SeaweedFS (`weed mini`), caption workers, the gateway's own code and boto3 client. The
gateway runs in this process (Starlette's TestClient drives its ASGI app, lifespan and sweeper
included) so that its S3 client can be watched: every call it makes is recorded through botocore's
own event hooks (nothing is replaced; the calls still reach SeaweedFS). Faked: the model hub (tiny
random models) and the GPU (CPU).
"""

import base64
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from fastapi.testclient import TestClient

from mmq.clients.gateway.app import create_app
from mmq.clients.gateway.uploads import upload_key
from mmq.clients.keys import KeyStore
from mmq.clients.remote import GatewayTransport
from mmq.tasks.artifacts import ArtifactStore
from mmq.tasks.errors import ArtifactNotFound, InvalidInput
from mmq.tasks.settings import Settings

WAV_HEADER = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00\x80\x3e\x00\x00"


@dataclass
class S3Calls:
    """The S3 requests an artifact store sent, with the object keys they touched.

    botocore announces each call's parameters (`before-parameter-build`, also when it only presigns a
    URL) and then each request it really sends (`before-call`, with the same `context`): the key is
    noted at the first, the call counted at the second, so that presigning counts for nothing. The
    store's plain GETs (`get_bytes` reads with a URL it signs, not through boto3) count as GetObject."""

    seen: list[tuple[str, str]] = field(default_factory=list)

    def watch(self, store: ArtifactStore) -> None:
        store._s3.meta.events.register("before-parameter-build.s3", self._note_key)
        store._s3.meta.events.register("before-call.s3", self._count)
        plain_get = store._plain_get

        def counted(ref: Any) -> bytes | None:
            data = plain_get(ref)
            if data is not None:
                self.seen.append(("GetObject", ref.key))
            return data

        store._plain_get = counted

    def _note_key(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        source = params.get("CopySource")  # a copy touches its source; botocore may have made it "bucket/key"
        if isinstance(source, str):
            source = {"Key": unquote(source.split("?")[0]).split("/", 1)[1]}
        context["watched_key"] = source["Key"] if isinstance(source, dict) else params.get("Key", "")

    def _count(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        self.seen.append((model.name, context.get("watched_key", "")))

    def on(self, key: str) -> list[str]:
        return [operation for operation, touched in self.seen if touched == key]

    def named(self, operation: str) -> list[str]:
        return [touched for name, touched in self.seen if name == operation]


@dataclass
class InProcessGateway:
    http: TestClient
    s3_calls: S3Calls
    settings: Settings

    def sdk(self, tenant: str) -> GatewayTransport:
        key = KeyStore(self.settings.redis.sync_client()).create(tenant)[1]
        self.http.headers["Authorization"] = f"Bearer {key}"
        return GatewayTransport(str(self.http.base_url), None, http=self.http)


@contextmanager
def gateway_in_process(stack, **env: str) -> Iterator[InProcessGateway]:
    settings = Settings.from_env({**stack.env, **env})
    app = create_app(settings, webhooks=False)
    calls = S3Calls()
    calls.watch(app.state.gateway.transport.store)  # the store the gateway calls S3 with
    with TestClient(app) as http:
        yield InProcessGateway(http, calls, settings)


def finished(sdk: GatewayTransport, job_id: str, timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while not (view := sdk.view(job_id))["status"] in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job {job_id} still {view['status']}"
        time.sleep(0.2)
    return view


def exists(store: ArtifactStore, key: str) -> bool:
    try:
        store.stored_file(key)
    except ArtifactNotFound:
        return False
    return True


def declare(http: TestClient, data: bytes, media_type: str = "image/png", **overrides: Any) -> dict[str, Any]:
    body = {"media_type": media_type, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), **overrides}
    created = http.post("/v1/uploads", json=body)
    assert created.status_code == 201, created.text
    return created.json()


def test_an_upload_becomes_a_job_input_without_the_gateway_reading_it(workers, sample_image):
    data = sample_image.read_bytes()
    with gateway_in_process(workers) as gateway:
        # given a file uploaded by the SDK (declared SHA-256, size and type; PUT straight to S3)
        sdk = gateway.sdk("uploads-zero")
        named = sdk.upload(data)
        key = upload_key("uploads-zero", named["upload"])
        store = ArtifactStore.from_settings(gateway.settings)
        assert exists(store, key)
        # when two jobs name it (a second submission: a retry, or another job on the same file)
        first = finished(sdk, sdk.submit("caption", {"image": named}))
        second = finished(sdk, sdk.submit("caption", {"image": named}))
    # then both ran on the same content-addressed artifact, S3 copied it, and the gateway never read it
    assert first["status"] == second["status"] == "succeeded", (first.get("error"), second.get("error"))
    digest = hashlib.sha256(data).hexdigest()
    ref = {k: v for k, v in first["inputs"]["image"].items() if k != "url"}
    assert ref == {"uri": f"s3://mmq-test/tenants/uploads-zero/blobs/{digest}.png", "media_type": "image/png",
                   "sha256": digest, "size": len(data)}
    assert {k: v for k, v in second["inputs"]["image"].items() if k != "url"} == ref
    assert gateway.s3_calls.named("GetObject") == []  # not the upload, not anything
    assert gateway.s3_calls.on(key) == ["HeadObject", "CopyObject", "DeleteObject"], gateway.s3_calls.seen
    # and the upload object is gone; its artifact stays
    assert not exists(store, key) and exists(store, ref["uri"].split("/", 3)[3])


def test_an_unused_upload_is_deleted_after_its_expiry(stack, sample_image):
    data = sample_image.read_bytes()
    # 8 s: the upload URL lives half of it, time enough for the PUT on a loaded machine
    with gateway_in_process(stack, MMQ_UPLOAD_EXPIRY_S="8") as gateway:
        # given an upload that no job uses
        sdk = gateway.sdk("uploads-expiry")
        named = sdk.upload(data)
        key = upload_key("uploads-expiry", named["upload"])
        store = ArtifactStore.from_settings(gateway.settings)
        assert exists(store, key)
        # when its expiry passes, the gateway's sweep deletes it
        deadline = time.monotonic() + 30
        while exists(store, key):
            assert time.monotonic() < deadline, "the expired upload is still there"
            time.sleep(0.2)
        # then a job that names it now is refused, naming the input
        with pytest.raises(InvalidInput) as refused:
            sdk.submit("caption", {"image": named})
        assert refused.value.field == "image" and "has no file" in str(refused.value)
    assert gateway.s3_calls.named("GetObject") == []


def test_s3_refuses_a_body_other_than_the_declared_one(stack, sample_image):
    data = sample_image.read_bytes()
    forged = bytes(reversed(data))  # the same size, other bytes
    with gateway_in_process(stack) as gateway:
        gateway.sdk("uploads-forged")
        upload = declare(gateway.http, data)
        assert set(upload["headers"]) == {"Content-Type", "x-amz-checksum-sha256"}
        # a body whose SHA-256 differs from the declared one, sent with the signed headers
        bad_digest = httpx.put(upload["url"], content=forged, headers=upload["headers"])
        assert bad_digest.status_code == 400 and "<Code>BadDigest</Code>" in bad_digest.text
        # the declared checksum of the forged body instead: it is signed into the URL, so refused
        lying_header = {**upload["headers"],
                        "x-amz-checksum-sha256": base64.b64encode(hashlib.sha256(forged).digest()).decode()}
        assert httpx.put(upload["url"], content=forged, headers=lying_header).status_code == 403
        # a longer body, and another media type: the length and the type are signed too
        assert httpx.put(upload["url"], content=data + b"\x00", headers=upload["headers"]).status_code == 403
        other_type = {**upload["headers"], "Content-Type": "image/jpeg"}
        assert httpx.put(upload["url"], content=data, headers=other_type).status_code == 403
        # nothing was stored, so a job naming the upload is refused
        refused = gateway.http.post("/v1/jobs", json={"pipeline": "caption", "inputs": {"image": upload["input"]}})
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "image"
        # and the declared body itself is accepted
        assert httpx.put(upload["url"], content=data, headers=upload["headers"]).status_code == 200


def test_a_declaration_needs_size_and_media_type_beside_the_sha256(stack):
    with gateway_in_process(stack) as gateway:
        gateway.sdk("uploads-declared")
        digest = hashlib.sha256(b"x").hexdigest()
        for body, missing in (({"sha256": digest, "size": 1}, "media_type"),
                              ({"sha256": digest, "media_type": "image/png"}, "size")):
            refused = gateway.http.post("/v1/uploads", json=body)
            assert refused.status_code == 422 and refused.json()["error"]["field"] == missing, refused.text
        bad = gateway.http.post("/v1/uploads", json={"sha256": "ABC", "size": 1, "media_type": "image/png"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "sha256"


def test_an_upload_is_named_by_its_id_not_by_a_reference_to_its_object(stack, sample_image):
    """An upload's content is only checked once a job takes it: a reference to its object is refused."""
    data = sample_image.read_bytes()
    with gateway_in_process(stack) as gateway:
        sdk = gateway.sdk("uploads-by-ref")
        named = sdk.upload(data)
        ref = {"uri": f"s3://mmq-test/{upload_key('uploads-by-ref', named['upload'])}", "media_type": "image/png",
               "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        with pytest.raises(InvalidInput) as refused:
            sdk.submit("caption", {"image": ref})
        assert refused.value.field == "image" and "is an upload, not an artifact" in str(refused.value)


def test_a_declared_media_type_that_lies_fails_naming_the_input(workers):
    with gateway_in_process(workers) as gateway:
        sdk = gateway.sdk("uploads-lies")
        # declared an image, but the bytes are the start of a WAV file: the caption worker refuses it
        named = sdk.upload(WAV_HEADER, media_type="image/png")
        failed = finished(sdk, sdk.submit("caption", {"image": named}))
        assert failed["status"] == "failed" and failed["error"]["type"] == "InvalidInput"
        assert failed["error"]["message"] == f"image: not a decodable image: its content is audio/wav ({len(WAV_HEADER)} bytes)"
        # declared audio for an image input: refused when submitted, naming the input
        audio = sdk.upload(WAV_HEADER, media_type="audio/wav")
        with pytest.raises(InvalidInput) as refused:
            sdk.submit("caption", {"image": audio})
        assert refused.value.field == "image" and "audio/wav" in str(refused.value)
    assert gateway.s3_calls.named("GetObject") == []


def test_an_upload_without_a_declared_checksum_still_works_read_once(workers, sample_image):
    """The protocol before checksums (deprecated): the gateway reads the file once to hash it."""
    data = sample_image.read_bytes()
    with gateway_in_process(workers) as gateway:
        sdk = gateway.sdk("uploads-legacy")
        upload = gateway.http.post("/v1/uploads", json={"media_type": "image/png"}).json()
        assert upload["headers"] == {}
        assert httpx.put(upload["url"], content=data).status_code == 200
        view = finished(sdk, sdk.submit("caption", {"image": upload["input"]}))
        key = upload_key("uploads-legacy", upload["id"])
        assert view["status"] == "succeeded", view.get("error")
        assert view["inputs"]["image"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert gateway.s3_calls.named("GetObject") == [key]
        assert not exists(ArtifactStore.from_settings(gateway.settings), key)
