"""The artifact store against a real S3 server (SeaweedFS)."""

import hashlib
import urllib.request

import pytest

from tests.conftest import TEST_CREDENTIALS
from mmq.clients.servers import start_seaweed, stop
from mmq.tasks import ArtifactNotFound, ArtifactRef, ArtifactStore, Settings, StorageError, StorageUnavailable

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
        pool = store._plain_http()
        request = pool.request

        def counted(method: str, url: str, **kwargs):
            response = request(method, url, **kwargs)
            self.seen.append((method, response.status))
            return response

        pool.request = counted


def test_a_put_is_one_conditional_request_and_the_same_bytes_again_store_nothing(s3_server):
    store = store_for(s3_server.port, "artifacts-plain-put")
    requests = PlainRequests(store)
    ref = store.put_bytes(PNG)
    assert store.put_bytes(PNG) == ref
    # 200, then 412: the object (the same content, by its key) was there already
    assert requests.seen == [("PUT", 200), ("PUT", 412)]
    assert store.stored_file(ref.key).sha256 == ref.sha256  # S3 has the checksum it verified


def test_a_refused_put_is_made_again_through_boto3_whose_error_names_the_cause(s3_server):
    store = store_for(s3_server.port, "artifacts-plain-refused")
    store.ensure_bucket()
    store._s3._request_signer._credentials.secret_key = "not-the-secret"  # signs wrongly from now on
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
