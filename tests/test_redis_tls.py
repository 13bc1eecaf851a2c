"""Managed Redis speaks TLS: with MMQ_BROKER_URL=rediss://… and the CA in MMQ_REDIS_CA_FILE, the
client, a worker, Celery's broker and its result backend all reach a TLS-only Redis; a CA that
did not sign the server's certificate is a clear error at once, not a hang."""


import pytest
import redis

from mmq.tasks import ConfigurationError, JobStatus

from .redis_servers import make_certificates, start_tls_redis


@pytest.fixture
def tls_redis(tmp_path):
    certificates = make_certificates(tmp_path / "tls")
    server = start_tls_redis(tmp_path / "redis-tls", certificates)
    yield server, certificates
    server.stop()


def test_a_caption_job_runs_end_to_end_over_tls(tls_redis, make_stack, start_worker, sample_image):
    server, certificates = tls_redis
    url = f"rediss://127.0.0.1:{server.port}/0"
    with pytest.raises(redis.RedisError):  # given: a server that speaks TLS only
        redis.Redis(port=server.port, socket_timeout=2).ping()
    stack = make_stack(MMQ_BROKER_URL=url, MMQ_REDIS_CA_FILE=str(certificates.ca_file))
    del stack.env["MMQ_RESULT_BACKEND"]  # one setting: the result backend follows the broker URL
    assert stack.settings.result_backend == url

    start_worker(stack, "caption")
    client = stack.client()
    record = client.submit("caption", image=sample_image).wait(timeout_s=120)

    assert record.status is JobStatus.SUCCEEDED, record.error
    assert record.outputs["text"].strip()
    # The result backend, over TLS: no result is stored (the record is the truth), but a fan-out's
    # items are joined by Celery's chord, which counts them in the result backend.
    fanned = client.submit_pipeline(CAPTION_EACH, images=[sample_image, sample_image]).wait(timeout_s=120)
    assert fanned.status is JobStatus.SUCCEEDED, fanned.error
    assert len(fanned.outputs["captions"]) == 2 and all(c.strip() for c in fanned.outputs["captions"])
    client.close()


CAPTION_EACH = {
    "name": "caption-each",
    "inputs": {"images": {"kind": "image", "many": True}},
    "steps": [{"name": "captions", "task": "caption", "each": {"image": "input.images"}}],
    "outputs": {"captions": "captions.text"},
}


def test_a_wrong_ca_is_a_clear_error_not_a_hang(tls_redis, make_stack, tmp_path, sample_image):
    server, _ = tls_redis
    stranger = make_certificates(tmp_path / "another-ca", name="not the server's CA")
    stack = make_stack(MMQ_BROKER_URL=f"rediss://127.0.0.1:{server.port}/0", MMQ_REDIS_CA_FILE=str(stranger.ca_file))
    del stack.env["MMQ_RESULT_BACKEND"]

    with stack.client() as client, pytest.raises(ConfigurationError) as refused:
        client.submit("caption", image=sample_image)

    message = str(refused.value)
    assert "MMQ_REDIS_CA_FILE" in message and "certificate verify failed" in message
