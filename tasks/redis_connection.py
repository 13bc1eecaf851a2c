"""How mmq reaches Redis: one value, read from MMQ_BROKER_URL, that builds every connection.

The URL takes one of three forms (Celery's own, so the broker reads it unchanged):

  redis://[[user]:password@]host:6379/0          plain TCP
  rediss://[[user]:password@]host:6380/0         TLS, verified against MMQ_REDIS_CA_FILE when set
                                                 (a private CA), else the system's CAs; a client
                                                 certificate from MMQ_REDIS_CERT_FILE/_KEY_FILE
  sentinel://[[user]:password@]host:26379;sentinel://host2:26379/0
                                                 Sentinel: the primary of MMQ_REDIS_SENTINEL_MASTER,
                                                 looked up again on every new connection, so each
                                                 client follows a failover to the promoted replica

The same value gives the stores' redis-py clients (`sync_client`), the gateway's and the webhook
dispatcher's asyncio clients (`async_client`) and Celery's broker and result-backend options
(`celery_options`): one setting configures them all alike.
Nothing else in mmq builds a Redis connection.

A failover can lose what the old primary acknowledged but had not yet sent to its replicas;
`ReplicaBarrier` makes the writes that must survive one wait for a replica (see docs/scaling.md).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import BrokerUnavailable, ConfigurationError
from .translation import redis_errors  # re-exported: jobs.py and heartbeats.py import it from here

SCHEMES = ("redis", "rediss", "sentinel")
SENTINEL_PORT = 26379
# Fail fast when Redis is away instead of hanging; a reply may take long (a blocking read).
CONNECT_TIMEOUT_S = 5
SOCKET_TIMEOUT_S = 30
# A sentinel answers at once or is down: ask the next one.
SENTINEL_TIMEOUT_S = 2
# How long a client keeps retrying while a Sentinel failover runs, and its longest pause between tries.
FAILOVER_RIDE_S = 10.0
FAILOVER_BACKOFF_CAP_S = 0.5
# How long a write that must survive a failover waits for a replica to acknowledge it.
REPLICA_ACK_TIMEOUT_MS = 2000
# How long the sentinels' count of promotable replicas is trusted before it is read again.
PRIMARY_CHECK_S = 1.0


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for TLS: the CA that signed the server's certificate, and a client certificate."""

    ca_file: str | None = None  # None: the system's CAs
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def given(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file))

    def redis_py_options(self) -> dict[str, Any]:
        """redis-py's (and kombu's, and Celery's backend's) names for these: verification always on."""
        return {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": self.ca_file,
                "ssl_certfile": self.cert_file, "ssl_keyfile": self.key_file}


@dataclass(frozen=True)
class RedisConnection:
    """A checked Redis URL with what it needs beside it: the Sentinel master name, the TLS files."""

    url: str
    master_name: str | None = None
    tls: TLSFiles = TLSFiles()
    variable: str = "MMQ_BROKER_URL"  # the setting the URL came from, for error messages

    @classmethod
    def parse(cls, url: str, *, master_name: str | None = None, tls: TLSFiles = TLSFiles(),
              variable: str = "MMQ_BROKER_URL") -> RedisConnection:
        """Check the URL's form (ConfigurationError naming `variable`); a sentinel:// URL needs
        `master_name`. The TLS files are not read here: `check_tls_files` does that once."""
        connection = cls(url=url, master_name=master_name or None, tls=tls, variable=variable)
        if connection.scheme not in SCHEMES:
            raise ConfigurationError(f"{variable} must be a redis://, rediss:// or sentinel:// URL, "
                                     f"got {_redacted(url)!r}")
        if connection.sentinel:
            connection.sentinel_addresses()  # checks each address
            connection._sentinel_target()  # and the database and credentials
            if not connection.master_name:
                raise ConfigurationError(f"{variable} is a sentinel:// URL: set MMQ_REDIS_SENTINEL_MASTER "
                                         "to the name of the master the sentinels monitor (e.g. mymaster)")
        else:
            connection._check_address()
        return connection

    def _check_address(self) -> None:
        split = urlsplit(self.url)
        try:
            split.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ConfigurationError(f"{self.variable}: bad port in {_redacted(self.url)!r}") from None
        if not split.hostname:
            raise ConfigurationError(f"{self.variable} names no host: {_redacted(self.url)!r}")
        _target(split, self.variable)

    @property
    def scheme(self) -> str:
        return urlsplit(self.url.split(";", 1)[0]).scheme.lower()

    @property
    def sentinel(self) -> bool:
        return self.scheme == "sentinel"

    @property
    def uses_tls(self) -> bool:
        return self.scheme == "rediss"

    # -- clients ---------------------------------------------------------------------------------

    def sync_client(self) -> Any:
        """A redis-py client that fails fast when Redis is away (BrokerUnavailable at the stores)."""
        import redis

        if self.sentinel:
            from redis.retry import Retry
            from redis.sentinel import Sentinel

            manager = Sentinel(self.sentinel_addresses(), sentinel_kwargs=_sentinel_options(),
                               retry=Retry(**_failover_retry()), **self._node_options())
            return manager.master_for(self.master_name)
        return redis.Redis.from_url(self.url, **self._node_options())

    def async_client(self) -> Any:
        """The same, for asyncio (the gateway's event streams, the webhook dispatcher)."""
        import redis.asyncio

        if self.sentinel:
            from redis.asyncio.retry import Retry
            from redis.asyncio.sentinel import Sentinel

            manager = Sentinel(self.sentinel_addresses(), sentinel_kwargs=_sentinel_options(),
                               retry=Retry(**_failover_retry()), **self._node_options())
            return manager.master_for(self.master_name)
        return redis.asyncio.Redis.from_url(self.url, **self._node_options())

    def _node_options(self) -> dict[str, Any]:
        """Options of a connection to a Redis server (never to a sentinel)."""
        options: dict[str, Any] = {"socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": SOCKET_TIMEOUT_S}
        if self.sentinel:
            db, username, password = self._sentinel_target()
            options.update(db=db, username=username, password=password)
        if self.uses_tls:
            options.update(self.tls.redis_py_options())
        return options

    # -- Celery ----------------------------------------------------------------------------------

    def celery_transport_options(self) -> dict[str, Any]:
        """Celery's transport options for this URL: Sentinel's master name, and timeouts for the
        sentinels (Celery's result backend would otherwise wait on a dead one forever)."""
        if not self.sentinel:
            return {}
        return {"master_name": self.master_name, "sentinel_kwargs": _sentinel_options()}

    def celery_ssl_options(self) -> dict[str, Any] | None:
        """Celery's TLS options for this URL (certificates always verified), None without TLS."""
        return self.tls.redis_py_options() if self.uses_tls else None

    # -- the sentinel:// form --------------------------------------------------------------------

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of each sentinel; every part must be a sentinel:// address."""
        addresses = []
        for part in self._sentinel_parts():
            if part.scheme != "sentinel" or not part.hostname:
                raise ConfigurationError(f"{self.variable}: each ';'-separated part of a Sentinel URL must be "
                                         f"sentinel://host:port, got {_redacted(part.geturl())!r}")
            try:
                addresses.append((part.hostname, part.port or SENTINEL_PORT))
            except ValueError:
                raise ConfigurationError(f"{self.variable}: bad port in {_redacted(part.geturl())!r}") from None
        return addresses

    def _sentinel_target(self) -> tuple[int, str | None, str | None]:
        """The database, user and password of the master. Celery reads them from the first address
        only, so a later address that names others would be silently ignored: refused instead."""
        parts = self._sentinel_parts()
        first = _target(parts[0], self.variable)
        for part in parts[1:]:
            db, username, password = _target(part, self.variable)
            if (part.path.strip("/") and db != first[0]) or (username and username != first[1]) or \
                    (password and password != first[2]):
                raise ConfigurationError(f"{self.variable}: Celery takes the database and password from the first "
                                         "sentinel:// address; a later one names different ones")
        return first

    def _sentinel_parts(self) -> list[Any]:
        return [urlsplit(part.strip()) for part in self.url.split(";") if part.strip()]


def celery_options(broker: RedisConnection, backend: RedisConnection) -> dict[str, Any]:
    """Celery's settings for reaching Redis as the broker and as the result backend. The transport
    options are to be merged with the caller's own (visibility timeout and the like)."""
    options: dict[str, Any] = {"broker_transport_options": broker.celery_transport_options(),
                               "result_backend_transport_options": backend.celery_transport_options()}
    if broker.uses_tls:
        options["broker_use_ssl"] = broker.celery_ssl_options()
    if backend.uses_tls:
        options["redis_backend_use_ssl"] = backend.celery_ssl_options()
    return options


def check_tls_files(tls: TLSFiles, connections: Sequence[RedisConnection]) -> None:
    """Refuse TLS files that cannot be used: missing ones, a key without its certificate, or files
    given while no URL uses TLS (they would be silently ignored)."""
    for name, path in (("MMQ_REDIS_CA_FILE", tls.ca_file), ("MMQ_REDIS_CERT_FILE", tls.cert_file),
                       ("MMQ_REDIS_KEY_FILE", tls.key_file)):
        if path and not Path(path).is_file():
            raise ConfigurationError(f"{name}: no such file {path!r}")
    if tls.key_file and not tls.cert_file:
        raise ConfigurationError("MMQ_REDIS_KEY_FILE is set without MMQ_REDIS_CERT_FILE (the client certificate)")
    if tls.given and not any(c.uses_tls for c in connections):
        raise ConfigurationError("MMQ_REDIS_CA_FILE, _CERT_FILE and _KEY_FILE apply to rediss:// URLs only, and "
                                 f"neither {' nor '.join(sorted({c.variable for c in connections}))} is one "
                                 "(TLS to Sentinel is not supported)")


def check_master_name(master_name: str | None, connections: Sequence[RedisConnection]) -> None:
    """A master name beside URLs that are not Sentinel ones would be silently ignored: refused."""
    if master_name and not any(c.sentinel for c in connections):
        raise ConfigurationError("MMQ_REDIS_SENTINEL_MASTER is set, but MMQ_BROKER_URL is not a sentinel:// URL")


def is_sentinel_client(client: Any) -> bool:
    """Whether a redis-py client reaches its primary through Sentinel (and may fail over)."""
    from redis.sentinel import SentinelConnectionPool

    return isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool)


@dataclass(frozen=True)
class Primary:
    """The primary that took some writes (its replication id: a promoted replica gets a new one)
    and how many replicas the sentinels could promote in its place."""

    replid: str
    promotable: int


class ReplicaBarrier:
    """Makes writes that must outlive a Sentinel failover wait until a replica has them.

    Replication is asynchronous: the primary acknowledges a write before its replicas have it, and
    a failover promotes a replica, so what the old primary acknowledged last can be gone (a replica
    whose link was down for a moment is still promoted). Redis's WAIT blocks until a replica holds
    everything the connection wrote, and so everything the primary took before it (the replication
    stream is ordered): the step messages Celery published on its own connection too.

    Only through Sentinel, and only while the sentinels know a replica they could promote (one that
    is not down): with none, no failover can happen and lose the writes."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._active = is_sentinel_client(client)
        self._promotable: tuple[float, int] | None = None

    def primary(self) -> Primary | None:
        """The primary now, or None when no failover could lose what it takes. Its identity is read
        every time (a stale one would refuse writes that a failover did not touch); the sentinels'
        count of promotable replicas at most once per PRIMARY_CHECK_S."""
        promotable = self.promotable()
        if not promotable:
            return None
        with redis_errors(self._client):
            replid = str(self._client.info("replication").get("master_replid", ""))
        return Primary(replid=replid, promotable=promotable)

    def promotable(self, *, fresh: bool = False) -> int:
        """How many replicas a failover could promote now (0 when not through Sentinel)."""
        if not self._active:
            return 0
        now = time.monotonic()
        if fresh or self._promotable is None or now - self._promotable[0] > PRIMARY_CHECK_S:
            pool = self._client.connection_pool
            self._promotable = (now, _promotable_replicas(pool.sentinel_manager, pool.service_name))
        return self._promotable[1]

    @staticmethod
    def add_wait(pipe: Any) -> None:
        """End a pipeline of writes with WAIT (on the same connection) and the primary's identity."""
        pipe.execute_command("WAIT", 1, REPLICA_ACK_TIMEOUT_MS)
        pipe.info("replication")

    def check(self, since: Primary, results: Sequence[Any], what: str) -> None:
        """After a pipeline ended by `add_wait`: BrokerUnavailable unless the primary is still the one
        seen before the writes began (a failover in between may have lost them, or sent some to the
        old primary and some to the new one) and a replica acknowledged them, or by now the sentinels
        know none they could promote (a replica that just died, say: no failover can lose them)."""
        acknowledged, replid = int(results[-2]), str(results[-1].get("master_replid", ""))
        again = "submit again, with an idempotency key so that it cannot run twice"
        if replid != since.replid:
            raise BrokerUnavailable(f"Redis failed over while {what} was written: it may run or may have been "
                                    f"lost; {again}")
        if acknowledged < 1 and self.promotable(fresh=True):
            raise BrokerUnavailable(f"no Redis replica confirmed {what} within {REPLICA_ACK_TIMEOUT_MS} ms: it runs "
                                    f"unless the primary fails over before a replica has it; {again}")


def _promotable_replicas(manager: Any, service: str) -> int:
    """How many replicas the sentinels would promote if the primary failed now: those not down
    whose link to the primary has been down for at most ten times down-after-milliseconds (Sentinel's
    own rule). 0 when no sentinel answers: without sentinels, no failover either."""
    import redis

    for sentinel in manager.sentinels:
        try:
            master, replicas = sentinel.sentinel_master(service), sentinel.sentinel_slaves(service)
        except redis.RedisError:
            continue
        longest_ms = 10 * int(master.get("down-after-milliseconds", 30_000))
        return sum(1 for r in replicas if not (r.get("is_sdown") or r.get("is_odown"))
                   and int(r.get("master-link-down-time", 0)) <= longest_ms)
    return 0


def _target(part: Any, variable: str) -> tuple[int, str | None, str | None]:
    path = part.path.strip("/")
    if path and not path.isdigit():
        raise ConfigurationError(f"{variable}: the database must be a number, got {path!r}")
    username = unquote(part.username) if part.username else None
    password = unquote(part.password) if part.password else None
    return int(path or 0), username, password


def _failover_retry() -> dict[str, Any]:
    """Through Sentinel, ride out a failover instead of failing every call while it runs: while
    the primary is down and until a replica is promoted (the sentinels' down-after-milliseconds,
    then a second or two), calls are retried with backoff for about FAILOVER_RIDE_S. Only refused
    connections and "no master" are retried: a timeout (a server that does not answer) is not."""
    import redis
    from redis.backoff import ExponentialBackoff

    return {"backoff": ExponentialBackoff(cap=FAILOVER_BACKOFF_CAP_S, base=0.05),
            "retries": int(FAILOVER_RIDE_S / FAILOVER_BACKOFF_CAP_S) + 4, "supported_errors": (redis.ConnectionError,)}


def _sentinel_options() -> dict[str, Any]:
    return {"socket_connect_timeout": SENTINEL_TIMEOUT_S, "socket_timeout": SENTINEL_TIMEOUT_S}


def _redacted(url: str) -> str:
    """A URL fit for an error message: any password replaced."""
    parts = []
    for part in url.split(";"):
        split = urlsplit(part)
        if split.password:
            netloc = split.netloc.replace(f":{split.password}@", ":***@", 1)
            part = split._replace(netloc=netloc).geturl()
        parts.append(part)
    return ";".join(parts)
