"""`Client` and `AsyncClient`, each both directly (Redis and S3) and through the gateway: the same
methods, the same outputs, the same exception types. Real gateway, Redis, S3 and workers; the model
hub and the GPU are faked (tiny random models, CPU)."""

import asyncio
import io

import pytest
from PIL import Image

from mmq.clients import AsyncClient, Client
from mmq.clients.remote import GatewayTransport
from mmq.tasks import JobStatus
from mmq.tasks.errors import AuthenticationFailed, InvalidInput, JobNotFound, UnknownTask

REMIX = {"steps": 2, "width": 64, "height": 64, "seed": 9}


@pytest.fixture(params=["direct", "gateway"])
def any_client(request, workers, gateway):
    """A client of each kind over the same stack."""
    if request.param == "direct":
        client = workers.client()
    else:
        client = Client(gateway_url=gateway.url, api_key=gateway.new_key("sdk"))
    yield client
    client.close()


def test_submit_wait_outputs_and_download(any_client, sample_image, tmp_path):
    job = any_client.submit("remix", image=sample_image, **REMIX)
    events = list(job.events(timeout_s=180))
    assert events[0] == {"type": "job", "status": "queued"} and events[-1]["status"] == "succeeded"
    record = job.wait(timeout_s=180)
    assert record.status is JobStatus.SUCCEEDED and job.status() is JobStatus.SUCCEEDED
    assert [s.name for s in record.steps] == ["caption", "text2image"]
    assert record.step_states["text2image"].status is JobStatus.SUCCEEDED
    outputs = job.outputs
    assert isinstance(outputs["caption"], str) and outputs["caption"].strip()
    image = outputs["image"]
    assert image.media_type == "image/png" and image.url.startswith("http")
    assert Image.open(io.BytesIO(image.read())).size == (64, 64)
    [written] = job.download(tmp_path / "out")
    assert written.name == "image.png" and written.read_bytes() == image.read()
    assert job in any_client.jobs(limit=50)[0]
    assert job.to_dict()["outputs"]["image"]["sha256"] == image.sha256


def test_same_exception_types_either_way(any_client):
    with pytest.raises(InvalidInput) as bad:
        any_client.submit("text2image", prompt="a boat", steps=0)
    assert bad.value.field == "steps"
    with pytest.raises(UnknownTask):
        any_client.submit("no-such-pipeline")
    with pytest.raises(JobNotFound):
        any_client.job("0" * 32)
    assert any_client.input_schema("remix")["steps"].maximum == 200


def test_idempotency_key_parameter(any_client):
    first = any_client.submit("text2image", prompt="a kettle", steps=1, width=64, height=64,
                              idempotency_key="kettle-1")
    again = any_client.submit("text2image", prompt="a kettle", steps=1, width=64, height=64,
                              idempotency_key="kettle-1")
    assert first.id == again.id


def test_cancel_a_running_job(any_client):
    job = any_client.submit("text2image", prompt="a slow one", steps=200, width=256, height=256)
    for event in job.events(timeout_s=180):
        if event["type"] == "step" and event["status"] == "running":
            break
    assert job.cancel() is True
    assert job.wait(timeout_s=60).status is JobStatus.CANCELLED
    assert job.cancel() is False  # already ended


def test_a_wrong_key_is_refused(gateway):
    with Client(gateway_url=gateway.url, api_key="mmq_000000000000_nope") as client:
        with pytest.raises(AuthenticationFailed):
            client.jobs()


def test_from_env_picks_the_gateway(gateway, monkeypatch):
    monkeypatch.setenv("MMQ_GATEWAY_URL", gateway.url)
    monkeypatch.setenv("MMQ_API_KEY", gateway.new_key("sdk"))
    with Client.from_env() as client:
        assert isinstance(client.transport, GatewayTransport)
        assert any(entry["name"] == "remix" for entry in client.pipelines())


@pytest.mark.parametrize("kind", ["direct", "gateway"])
def test_async_client(kind, workers, gateway, sample_image, tmp_path):
    options = ({"settings": workers.settings} if kind == "direct"
               else {"gateway_url": gateway.url, "api_key": gateway.new_key("async")})

    async def main():
        async with AsyncClient(**options) as client:
            jobs = [await client.submit("caption", image=sample_image, max_new_tokens=8) for _ in range(2)]
            jobs.append(await client.submit("remix", image=sample_image, **REMIX))
            statuses = [event["status"] async for event in jobs[-1].events(timeout_s=180)
                        if event["type"] == "job"]
            records = await asyncio.gather(*(job.wait(timeout_s=180) for job in jobs))
            image = (await jobs[-1].outputs)["image"]
            path = await image.download(tmp_path / f"{kind}.png")
            return statuses, records, path, await image.read()

    statuses, records, path, data = asyncio.run(main())
    assert statuses[0] == "queued" and statuses[-1] == "succeeded"
    assert all(r.status is JobStatus.SUCCEEDED for r in records)
    assert records[0].outputs["text"].strip() and path.read_bytes() == data


def test_an_ad_hoc_pipeline(any_client, sample_image):
    spec = {
        "name": "caption-then-draw",
        "inputs": {"image": {"kind": "image"}, "seed": {"kind": "integer", "default": 4},
                   "size": {"kind": "integer", "default": 64}, "steps": {"kind": "integer", "default": 1}},
        "steps": [
            {"name": "look", "task": "caption", "bind": {"image": "input.image"}},
            {"name": "draw", "task": "text2image", "bind": {
                "prompt": {"format": "a painting of {look.text}"}, "seed": "input.seed",
                "steps": "input.steps", "width": "input.size", "height": "input.size"}},
        ],
        "outputs": {"caption": "look.text", "image": "draw.image"},
    }
    record = any_client.submit_pipeline(spec, image=sample_image).wait(timeout_s=180)
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert record.name == "caption-then-draw" and record.outputs["image"]["media_type"] == "image/png"


def test_submit_many(any_client, sample_image):
    jobs = any_client.submit_many("caption", [{"image": sample_image, "max_new_tokens": n} for n in (3, 4, 5)])
    records = [job.wait(timeout_s=120) for job in jobs]
    assert [r.inputs["max_new_tokens"] for r in records] == [3, 4, 5]
    assert all(r.status is JobStatus.SUCCEEDED for r in records)
    with pytest.raises(InvalidInput) as bad:  # refused, naming the input
        any_client.submit_many("caption", [{"image": sample_image}, {"image": sample_image, "max_new_tokens": 0}])
    assert bad.value.field == "max_new_tokens"
