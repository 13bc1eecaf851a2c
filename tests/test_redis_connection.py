"""How to reach Redis, from one setting: MMQ_BROKER_URL (redis://, rediss:// or sentinel://), the
Sentinel master's name and the TLS files beside it; bad combinations refused at start-up with the
variable named; the same value configures Celery's broker, its result backend and every store."""

import ssl

import pytest

from mmq.tasks import ConfigurationError, Settings
from mmq.tasks.celery_app import make_celery
from mmq.tasks.redis_connection import is_sentinel_client

SENTINELS = "sentinel://:s3cret@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"


def settings(tmp_path, **env):
    return Settings.from_env({"MMQ_DATA_DIR": str(tmp_path), **env})


@pytest.mark.parametrize("env, message", [
    ({"MMQ_BROKER_URL": "amqp://guest@rabbit//"}, "MMQ_BROKER_URL must be a redis://, rediss:// or sentinel://"),
    ({"MMQ_RESULT_BACKEND": "db+sqlite:///r.db"}, "MMQ_RESULT_BACKEND must be a redis://"),
    ({"MMQ_BROKER_URL": "redis://:pw@/0"}, "MMQ_BROKER_URL names no host"),
    ({"MMQ_BROKER_URL": "redis://r:port/0"}, "MMQ_BROKER_URL: bad port"),
    ({"MMQ_BROKER_URL": "redis://r:6379/zero"}, "MMQ_BROKER_URL: the database must be a number"),
    ({"MMQ_BROKER_URL": SENTINELS}, "MMQ_BROKER_URL is a sentinel:// URL: set MMQ_REDIS_SENTINEL_MASTER"),
    ({"MMQ_BROKER_URL": "sentinel://a:26379;redis://b:6379", "MMQ_REDIS_SENTINEL_MASTER": "m"},
     "each ';'-separated part of a Sentinel URL must be sentinel://host:port"),
    ({"MMQ_BROKER_URL": "sentinel://a:26379;sentinel://b:26379/3", "MMQ_REDIS_SENTINEL_MASTER": "m"},
     "Celery takes the database and password from the first sentinel:// address"),
    ({"MMQ_REDIS_SENTINEL_MASTER": "mymaster"}, "MMQ_REDIS_SENTINEL_MASTER is set, but MMQ_BROKER_URL is not"),
    ({"MMQ_REDIS_CA_FILE": "/etc/hostname"}, "apply to rediss:// URLs"),
    ({"MMQ_BROKER_URL": "rediss://r:6380/0", "MMQ_REDIS_CA_FILE": "/no/such/ca.pem"},
     "MMQ_REDIS_CA_FILE: no such file '/no/such/ca.pem'"),
    ({"MMQ_BROKER_URL": "rediss://r:6380/0", "MMQ_REDIS_KEY_FILE": "/etc/hostname"},
     "MMQ_REDIS_KEY_FILE is set without MMQ_REDIS_CERT_FILE"),
])
def test_bad_redis_settings_are_refused_with_the_variable_named(tmp_path, env, message):
    with pytest.raises(ConfigurationError, match=message):
        settings(tmp_path, **env)


def test_a_password_never_shows_in_an_error(tmp_path):
    with pytest.raises(ConfigurationError) as refused:
        settings(tmp_path, MMQ_BROKER_URL="memcache://:hunter2@cache:11211")
    assert "hunter2" not in str(refused.value) and ":***@" in str(refused.value)


def test_sentinel_configures_the_broker_the_result_backend_and_the_stores_alike(tmp_path):
    given = settings(tmp_path, MMQ_BROKER_URL=SENTINELS, MMQ_REDIS_SENTINEL_MASTER="mymaster",
                     MMQ_VISIBILITY_TIMEOUT_S="5000")
    conf = make_celery(given).conf

    assert given.result_backend == SENTINELS  # the result backend follows the broker URL
    for options in (conf.broker_transport_options, conf.result_backend_transport_options):
        assert options["master_name"] == "mymaster" and options["visibility_timeout"] == 5000
        assert options["sentinel_kwargs"]["socket_timeout"] > 0  # a dead sentinel is skipped, not waited on
    assert given.redis.sentinel_addresses() == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379)]
    client = given.redis.sync_client()  # connects lazily: nothing is running at these addresses
    assert is_sentinel_client(client)
    pool = client.connection_pool.connection_kwargs
    assert (pool["db"], pool["password"], pool["socket_connect_timeout"]) == (2, "s3cret", 5)


def test_tls_verifies_against_the_given_ca_everywhere(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("a CA certificate")  # read only when a connection is made
    given = settings(tmp_path, MMQ_BROKER_URL="rediss://:pw@redis.example:6380/0", MMQ_REDIS_CA_FILE=str(ca))
    conf = make_celery(given).conf

    expected = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(ca), "ssl_certfile": None,
                "ssl_keyfile": None}
    assert conf.broker_use_ssl == expected and conf.redis_backend_use_ssl == expected
    pool = given.redis.sync_client().connection_pool.connection_kwargs
    assert (pool["ssl_ca_certs"], pool["ssl_cert_reqs"], pool["socket_timeout"]) == (str(ca), ssl.CERT_REQUIRED, 30)


def test_plain_redis_needs_nothing_beside_the_url(tmp_path):
    conf = make_celery(settings(tmp_path, MMQ_BROKER_URL="redis://r:6379/1")).conf
    assert "master_name" not in conf.broker_transport_options
    assert not conf.broker_use_ssl and not conf.redis_backend_use_ssl
