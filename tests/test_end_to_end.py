"""Jobs through real worker processes: `caption` and `text2image` alone, and the `remix` pipeline."""

import hashlib
import io
import urllib.request

from PIL import Image

from mmq.tasks import JobStatus
from tests.outcomes import succeeded

PROMPT = "a beautiful house with a sunset background"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_caption_alone(client, sample_image):
    record = succeeded(client.submit("caption", image=sample_image))
    assert isinstance(record.outputs["text"], str) and record.outputs["text"].strip()
    [step] = record.steps
    assert (step.task, step.queue, step.celery_id) == ("caption", "caption", f"{record.id}-0")
    state = record.step_states["caption"]
    assert state.status is JobStatus.SUCCEEDED and state.attempts == 1
    assert record.created_at <= record.started_at <= state.finished_at <= record.finished_at


def test_text2image_alone_is_a_png_of_the_asked_size(client):
    job = client.submit("text2image", prompt=PROMPT, width=64, height=96, steps=4, seed=3)
    record = succeeded(job)
    image = job.outputs["image"]
    data = image.read()
    assert image.media_type == "image/png" and data.startswith(PNG_SIGNATURE)
    assert image.sha256 == hashlib.sha256(data).hexdigest() and image.size == len(data)
    assert Image.open(io.BytesIO(data)).size == (64, 96)
    done, total = record.step_states["text2image"].progress
    assert done == total >= 4  # every denoising iteration reported (PNDM adds one warm-up step)
    with urllib.request.urlopen(image.url, timeout=10) as response:
        assert response.read() == data


def test_the_same_seed_gives_the_same_artifact(client):
    first = succeeded(client.submit("text2image", prompt=PROMPT, width=64, height=64, steps=3, seed=11))
    again = succeeded(client.submit("text2image", prompt=PROMPT, width=64, height=64, steps=3, seed=11))
    other = succeeded(client.submit("text2image", prompt=PROMPT, width=64, height=64, steps=3, seed=12))
    assert first.outputs["image"]["uri"] == again.outputs["image"]["uri"]
    assert other.outputs["image"]["uri"] != first.outputs["image"]["uri"]


def test_remix_captions_then_draws_passing_images_by_reference(client, workers, sample_image):
    job = client.submit("remix", image=sample_image, width=64, height=64, steps=3)
    record = succeeded(job)
    assert [s.name for s in record.steps] == ["caption", "text2image"]
    assert [s.queue for s in record.steps] == ["caption", "diffusion"]
    caption = record.outputs["caption"]
    assert caption == record.step_states["caption"].outputs["text"] and caption.strip()
    image = job.outputs["image"]
    assert image.read().startswith(PNG_SIGNATURE)
    assert record.inputs["image"]["uri"].startswith("s3://")
    assert_no_image_bytes_in_redis(workers.redis_client())


def assert_no_image_bytes_in_redis(redis):
    """Media cross Redis only as references: no PNG signature in any value of any key."""
    for key in redis.scan_iter(count=1000):
        kind = redis.type(key).decode()
        if kind == "string":
            values = [redis.get(key)]
        elif kind == "hash":
            values = list(redis.hgetall(key).values())
        elif kind == "list":
            values = redis.lrange(key, 0, -1)
        elif kind == "zset":
            values = [member for member, _ in redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "set":
            values = list(redis.smembers(key))
        else:
            values = []
        assert not any(PNG_SIGNATURE in (v or b"") for v in values), key
