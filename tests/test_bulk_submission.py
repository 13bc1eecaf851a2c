"""A bulk submission with files: queued a chunk at a time as each chunk's files are stored, in the
order given, and all or nothing when storage fails part-way. Real Redis and S3, no worker (the
messages stay queued where the test can count them); the S3 outage is simulated at one upload."""

import hashlib
import io

import pytest
from PIL import Image

from mmq.clients import direct
from mmq.clients.direct import DirectTransport
from mmq.tasks import JobStatus
from mmq.tasks.artifacts import ArtifactRef
from mmq.tasks.errors import StorageUnavailable


def distinct_pngs(count: int) -> list[bytes]:
    images = []
    for index in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (index, 255 - index, 7)).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


@pytest.fixture
def stack(make_stack):
    return make_stack()  # a Redis of its own, with no worker to take the messages


@pytest.fixture
def transport(stack):
    transport = DirectTransport(stack.settings, pipelines={})
    yield transport
    transport.close()


@pytest.fixture
def redis(stack):
    return stack.redis_client()


def test_chunks_grow_from_a_few_jobs_so_that_workers_start_soon():
    sizes = [len(chunk) for chunk in direct._upload_chunks(list(range(2 * direct._UPLOAD_CHUNK + 3)))]
    assert sizes == [4, 8, 16, 7]  # _FIRST_UPLOAD_CHUNK, doubling, up to _UPLOAD_CHUNK, the rest
    assert sum(sizes) == 2 * direct._UPLOAD_CHUNK + 3


def test_jobs_with_files_are_queued_in_chunks_in_the_order_given(transport, redis):
    images = distinct_pngs(2 * direct._UPLOAD_CHUNK + 3)  # chunks of 4, 8, 16 and a partial one
    ids = transport.submit_many("caption", [{"image": data, "max_new_tokens": 3} for data in images])
    records = [transport.jobs.get(job_id) for job_id in ids]
    assert [r.inputs["image"]["sha256"] for r in records] == [hashlib.sha256(d).hexdigest() for d in images]
    assert all(r.status is JobStatus.QUEUED for r in records)
    assert redis.llen("caption") == len(images)  # one step message each
    assert [transport.store.get_bytes(ArtifactRef.from_dict(r.inputs["image"])) for r in records] == images


def test_storage_failing_part_way_fails_the_jobs_already_queued(transport, redis, monkeypatch):
    images = distinct_pngs(3 * direct._UPLOAD_CHUNK)
    first, second = [len(chunk) for chunk in direct._upload_chunks(images)][:2]
    real_put, puts = transport.store.put_bytes, []

    def put_bytes(data, media_type=None, *, prefix=""):
        puts.append(data)
        if len(puts) == first + second:  # the last file of the second chunk
            raise StorageUnavailable("S3 went away")
        return real_put(data, media_type, prefix=prefix)

    monkeypatch.setattr(transport.store, "put_bytes", put_bytes)
    with pytest.raises(StorageUnavailable, match="S3 went away"):
        transport.submit_many("caption", [{"image": data} for data in images])
    # The first chunk had been queued: its jobs are failed, naming the submission; nothing after
    # it was queued, and a worker that receives one of the first chunk's steps finds its job ended.
    records = [transport.jobs.get(job_id) for job_id in transport.jobs.list(limit=100).ids]
    assert len(records) == first
    assert all(r.status is JobStatus.FAILED and r.error["step"] == "submit" for r in records)
    assert all(r.error == {"step": "submit", "type": "StorageUnavailable", "message": "S3 went away"}
               for r in records)
    assert redis.llen("caption") == first
