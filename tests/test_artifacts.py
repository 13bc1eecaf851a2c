"""The artifact store against a real S3 server (SeaweedFS)."""

import dataclasses
import datetime
import hashlib
import urllib.request
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import TEST_CREDENTIALS
from mmq.clients.servers import start_seaweed, stop
from mmq.tasks import ArtifactNotFound, ArtifactRef, ArtifactStore, Settings, StorageError, StorageUnavailable
from mmq.tasks.s3_signing import SigningKey, presign

PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100


def store_for(port: int, bucket: str) -> ArtifactStore:
    return ArtifactStore.from_settings(Settings(
        s3_endpoint_url=f"http://127.0.0.1:{port}", s3_bucket=bucket,
        aws_access_key_id="test", aws_secret_access_key="test-secret"))


def test_put_and_get_bytes_with_a_content_addressed_reference(s3_server):
    store = store_for(s3_server.port, "artifacts-bytes")  # a bucket that does not exist yet
    ref = store.put_bytes(PNG)
    digest = hashlib.sha256(PNG).hexdigest()
    assert ref == ArtifactRef(uri=f"s3://artifacts-bytes/blobs/{digest}.png", media_type="image/png",
                              sha256=digest, size=len(PNG))
    assert store.get_bytes(ref) == PNG
    assert store.put_bytes(PNG) == ref  # the same bytes, the same object


class PlainRequests:
    """The store's own signed requests (not boto3's), by method and S3's answer."""

    def __init__(self, store: ArtifactStore) -> None:
        self.seen: list[tuple[str, int]] = []
        request = store._http.request

        def counted(method: str, url: str, **kwargs):
            response = request(method, url, **kwargs)
            self.seen.append((method, response.status))
            return response

        store._http.request = counted


def test_a_put_is_one_conditional_request_and_the_same_bytes_again_store_nothing(s3_server):
    store = store_for(s3_server.port, "artifacts-plain-put")
    requests = PlainRequests(store)
    ref = store.put_bytes(PNG)
    assert store.put_bytes(PNG) == ref
    # 200, then 412: the object (the same content, by its key) was there already
    assert requests.seen == [("PUT", 200), ("PUT", 412)]
    assert store.stored_file(ref.key).sha256 == ref.sha256  # S3 has the checksum it verified


def test_a_get_is_one_plain_request_signed_by_the_store(s3_server):
    store = store_for(s3_server.port, "artifacts-plain-get")
    ref = store.put_bytes(PNG)
    requests = PlainRequests(store)
    assert store.get_bytes(ref) == PNG
    assert requests.seen == [("GET", 200)]  # S3 took the store's own signature: no second try by boto3


@pytest.mark.parametrize("endpoint, token", [("http://127.0.0.1:8333", None), ("https://s3.example.com", "a/token+="),
                                             ("https://s3.example.com:443/base", None)])
def test_the_store_signs_its_urls_as_botocore_does(endpoint, token):
    """The same URL, signature included, as botocore's presigner at the same instant: a key with
    spaces, a plus and a non-ASCII letter; a PUT's signed headers; a session token; a default port."""
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-3", aws_access_key_id="AK",
                      aws_secret_access_key="S/K", aws_session_token=token,
                      config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
    signing = SigningKey("AK", "S/K", token, s3.meta.endpoint_url, s3.meta.region_name)
    now = datetime.datetime(2026, 12, 6, 18, 5, 7, tzinfo=datetime.UTC)
    put_headers = {"Content-Type": "image/png", "x-amz-checksum-sha256": "q83v=", "If-None-Match": "*"}
    with mock.patch("botocore.auth.get_current_datetime", return_value=now.replace(tzinfo=None)):
        botocore_urls = [
            s3.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "tenants/a b+c~é/x.png"},
                                      ExpiresIn=60),
            s3.generate_presigned_url("put_object", ExpiresIn=60, Params={
                "Bucket": "bkt", "Key": "blobs/k.png", "ContentType": "image/png", "ChecksumSHA256": "q83v=",
                "IfNoneMatch": "*"})]
    ours = [presign(signing, "GET", "bkt", "tenants/a b+c~é/x.png", expires_s=60, now=now),
            presign(signing, "PUT", "bkt", "blobs/k.png", expires_s=60, headers=put_headers, now=now)]
    for theirs, mine in zip(botocore_urls, ours):
        theirs, mine = urlsplit(theirs), urlsplit(mine)
        assert mine[:3] == theirs[:3] and parse_qs(mine.query) == parse_qs(theirs.query), (mine, theirs)


def test_a_refused_put_is_made_again_through_boto3_whose_error_names_the_cause(s3_server):
    store = store_for(s3_server.port, "artifacts-plain-refused")
    store.ensure_bucket()
    # Both signers (its own, boto3's) sign wrongly from now on.
    store._signing = dataclasses.replace(store._signing, secret_key="not-the-secret")
    store._s3._request_signer._credentials.secret_key = "not-the-secret"
    requests = PlainRequests(store)
    with pytest.raises(StorageError, match=r"refused s3://artifacts-plain-refused/blobs/\w+\.png: 403"):
        store.put_bytes(PNG)
    assert requests.seen == [("PUT", 403)]


def test_files_round_trip_and_presigned_urls_download(s3_server, tmp_path):
    store = store_for(s3_server.port, "artifacts-files")
    source = tmp_path / "in.bin"
    source.write_bytes(b"\x00\x01 not text")
    ref = store.put_file(source, "application/octet-stream")
    assert store.download(ref, tmp_path / "out.bin").read_bytes() == source.read_bytes()
    with urllib.request.urlopen(store.presigned_url(ref), timeout=10) as response:
        assert response.read() == source.read_bytes()


def test_reference_round_trips_through_json_shape():
    ref = ArtifactRef(uri="s3://b/blobs/k.png", media_type="image/png", sha256="k", size=3)
    assert ArtifactRef.from_dict(ref.to_dict()) == ref
    assert (ref.bucket, ref.key) == ("b", "blobs/k.png")


def test_missing_object_is_artifact_not_found(s3_server):
    store = store_for(s3_server.port, "artifacts-missing")
    store.ensure_bucket()
    ghost = ArtifactRef(uri="s3://artifacts-missing/blobs/none.png", media_type="image/png", sha256="0", size=1)
    with pytest.raises(ArtifactNotFound, match="no such artifact: s3://artifacts-missing/blobs/none.png"):
        store.get_bytes(ghost)


def test_unreachable_server_is_storage_unavailable(tmp_path):
    server = start_seaweed(tmp_path / "s3", credentials=TEST_CREDENTIALS, tied=True)
    store = store_for(server.port, "artifacts-down")
    ref = store.put_bytes(PNG)
    stop(server.pid)
    with pytest.raises(StorageUnavailable, match="artifact store unreachable"):
        store.get_bytes(ref)


def test_the_client_uploads_a_file_as_an_artifact_with_a_working_url(client, sample_image):
    artifact = client.upload(sample_image)
    assert artifact.media_type == "image/png" and artifact.size == sample_image.stat().st_size
    with urllib.request.urlopen(artifact.url, timeout=10) as response:
        assert response.read() == sample_image.read_bytes()


def test_clients_starting_together_all_get_the_bucket_that_one_of_them_creates(s3_server):
    # The soak found this: 8 producers starting at once, a new bucket, and all but one were refused
    # with BucketAlreadyOwnedByYou after finding it missing a moment before.
    import threading

    stores = [store_for(s3_server.port, "artifacts-race") for _ in range(8)]
    start, errors = threading.Barrier(len(stores)), []

    def first_put(store: ArtifactStore) -> None:
        start.wait()
        try:
            store.put_bytes(PNG)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_put, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
