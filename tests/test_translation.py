"""Redis, S3 and HTTP errors become mmq's at the edge (`mmq.tasks.translation`), against real
servers: a redis-server made full, read-only or stopped; SeaweedFS stopped; a socket that never
answers; a port where nothing listens. Nothing is faked."""

import asyncio
import socket

import httpx
import pytest

from mmq.clients.servers import free_port, start_redis, stop
from mmq.tasks import ArtifactStore, Settings
from mmq.tasks.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigurationError,
    GatewayUnavailable,
    ServiceUnavailable,
    StorageUnavailable,
)
from mmq.tasks.redis_connection import RedisConnection
from mmq.tasks.translation import GATEWAY, STORAGE, http_errors, redis_errors, third_party_errors, translate
from tests.conftest import TEST_CREDENTIALS

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def redis_client(port: int, password: str = ""):
    return RedisConnection.parse(f"redis://:{password}@127.0.0.1:{port}/0" if password else
                                 f"redis://127.0.0.1:{port}/0").sync_client()


@pytest.fixture
def private_redis(tmp_path):
    server = start_redis(tmp_path / "redis", persistent=False, tied=True)
    yield server
    stop(server.pid)


def test_a_closed_port_is_broker_unavailable_naming_the_address():
    port = free_port()
    client = redis_client(port)
    with pytest.raises(BrokerUnavailable, match=f"Redis unreachable at 127.0.0.1:{port}: "), \
            redis_errors(client):
        client.ping()


def test_it_wraps_awaits_of_the_asyncio_client_too():
    port = free_port()

    async def read() -> None:
        client = RedisConnection.parse(f"redis://127.0.0.1:{port}/0").async_client()
        try:
            with redis_errors(client):
                await client.hgetall("mmq:job:x")
        finally:
            await client.aclose()

    with pytest.raises(BrokerUnavailable, match=f"Redis unreachable at 127.0.0.1:{port}"):
        asyncio.run(read())


def test_a_server_that_never_answers_is_a_timeout_naming_the_address():
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
        with pytest.raises(BrokerUnavailable, match=f"Redis unreachable at 127.0.0.1:{port}: Timeout"), \
                redis_errors(client):
            client.ping()


def test_what_does_not_speak_redis_is_broker_unavailable(s3_server):
    client = redis_client(s3_server.port)  # an S3 server answers in HTTP
    with pytest.raises(BrokerUnavailable, match="does not speak Redis"), redis_errors(client):
        client.ping()


def test_a_full_redis_and_a_read_only_one_take_no_writes(private_redis):
    client = redis_client(private_redis.port)
    client.config_set("maxmemory", 1)  # noeviction (the default): every write is refused
    with pytest.raises(BrokerUnavailable, match="is full"), redis_errors(client):
        client.set("mmq:test", "x")
    client.config_set("maxmemory", 0)
    client.replicaof("127.0.0.1", free_port())  # a replica (of a primary that is away) refuses writes
    with pytest.raises(BrokerUnavailable, match="read-only replica"), redis_errors(client):
        client.set("mmq:test", "x")
    client.replicaof("NO", "ONE")


def test_a_refused_command_is_a_broker_error_not_unavailable(private_redis):
    client = redis_client(private_redis.port)
    client.set("mmq:test", "x")
    with pytest.raises(BrokerError, match="WRONGTYPE") as refused, redis_errors(client):
        client.hgetall("mmq:test")
    assert not isinstance(refused.value, ServiceUnavailable)


def test_a_wrong_password_is_a_configuration_error(private_redis):
    client = redis_client(private_redis.port)
    client.config_set("requirepass", "right")
    wrong = redis_client(private_redis.port, password="wrong")
    with pytest.raises(ConfigurationError, match="refused mmq's credentials"), redis_errors(wrong):
        wrong.ping()


def test_the_old_home_of_redis_errors_still_serves_it():
    from mmq.tasks import redis_connection

    assert redis_connection.redis_errors is redis_errors


def store_at(port: int, bucket: str = "mmq-translation") -> ArtifactStore:
    return ArtifactStore.from_settings(Settings(s3_endpoint_url=f"http://127.0.0.1:{port}", s3_bucket=bucket,
                                                aws_access_key_id=TEST_CREDENTIALS[0],
                                                aws_secret_access_key=TEST_CREDENTIALS[1]))


def test_s3_away_is_storage_unavailable_naming_the_endpoint():
    port = free_port()
    with pytest.raises(StorageUnavailable, match=f"artifact store unreachable at http://127.0.0.1:{port}: "):
        store_at(port).put_bytes(PNG)


def test_nothing_at_a_url_is_the_service_unavailable_by_name():
    url = f"http://127.0.0.1:{free_port()}/v1/jobs?secret=1"
    with pytest.raises(GatewayUnavailable, match=r"gateway unreachable at http://127\.0\.0\.1:\d+: ") \
            as away, http_errors(GATEWAY, url):
        httpx.get(url)
    assert "secret" not in str(away.value)  # never a URL's query: a presigned URL's signature is there
    with pytest.raises(StorageUnavailable, match="artifact store unreachable at http://127.0.0.1"), \
            http_errors(STORAGE, url):
        httpx.get(url)


def test_a_gateway_url_without_a_scheme_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="not an http"), http_errors(GATEWAY, "localhost:8600"):
        httpx.get("localhost:8600/v1/jobs")


def test_translate_leaves_other_errors_alone_and_the_net_passes_them_on():
    assert translate(ValueError("x")) is None
    with pytest.raises(ValueError, match="mine"), third_party_errors():
        raise ValueError("mine")
    with pytest.raises(BrokerUnavailable), third_party_errors():
        redis_client(free_port()).ping()
