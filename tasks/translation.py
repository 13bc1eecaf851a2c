"""Third-party errors as mmq's, translated at the edge, once: Redis (redis-py), S3 (botocore) and
HTTP (httpx).

Every store and client runs its calls inside one of these context managers, so that its callers
see mmq's errors (`mmq.tasks.errors`) and never a library's:

    with redis_errors(client):             # BrokerUnavailable, BrokerError, ConfigurationError
        client.hgetall(key)
    with storage_errors(endpoint, bucket=b, key=k):   # StorageUnavailable, ArtifactNotFound, StorageError
        s3.get_object(Bucket=b, Key=k)
    with http_errors(GATEWAY, url):        # GatewayUnavailable (StorageUnavailable for STORAGE's URLs)
        http.get(url)

They are plain context managers, so they wrap awaits in async code too (`with redis_errors(client):
await client.xread(...)`). `translate(exc)` is the same mapping as a function, and
`third_party_errors()` applies it to whatever escapes a block: the outermost handlers (the CLI's
`main`, the gateway's exception handler) use them, so that even an error a store forgot to translate
reaches no user as a traceback.

A service that cannot be reached is a `ServiceUnavailable` (the CLI exits 5, the gateway answers
503). Its message is one line naming the service and its address ("Redis unreachable at
127.0.0.1:6379: ..."); never a URL's query, where a presigned URL carries its signature.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from .errors import (
    ArtifactAccessDenied,
    ArtifactNotFound,
    BrokerError,
    BrokerUnavailable,
    ConfigurationError,
    GatewayError,
    GatewayUnavailable,
    MMQError,
    ServiceUnavailable,
    StorageError,
    StorageUnavailable,
)

GATEWAY, STORAGE = "gateway", "artifact store"
_UNAVAILABLE: dict[str, type[ServiceUnavailable]] = {GATEWAY: GatewayUnavailable, STORAGE: StorageUnavailable}
# S3's codes for "no such object or bucket"; and for a signature or key it does not accept.
_NOT_FOUND_CODES = ("404", "NoSuchKey", "NoSuchBucket", "NotFound")
_CREDENTIAL_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch")


# -- context managers --------------------------------------------------------------------------


@contextmanager
def redis_errors(client: Any = None) -> Iterator[None]:
    """redis-py's errors as mmq's. `client` (a redis-py client, sync or asyncio) lets the message name
    the address even when redis-py's does not (a timeout)."""
    try:
        yield
    except Exception as exc:
        translated = from_redis(exc, redis_address(client))
        if translated is None:
            raise
        raise translated from None


@contextmanager
def storage_errors(endpoint: str | None = None, *, bucket: str | None = None,
                   key: str | None = None) -> Iterator[None]:
    """botocore's errors as mmq's, for a call to the S3 server at `endpoint` about `bucket`/`key`."""
    try:
        yield
    except Exception as exc:
        translated = from_botocore(exc, endpoint, _s3_uri(bucket, key))
        if translated is None:
            raise
        raise translated from None


@contextmanager
def http_errors(service: str, url: str) -> Iterator[None]:
    """httpx's errors as mmq's, for a request to `service` (GATEWAY, or STORAGE through a presigned
    URL) at `url`: no answer is GatewayUnavailable or StorageUnavailable."""
    try:
        yield
    except Exception as exc:
        translated = from_httpx(exc, service, url)
        if translated is None:
            raise
        raise translated from None


@contextmanager
def third_party_errors() -> Iterator[None]:
    """Any Redis, S3 or HTTP error that escapes the block, as mmq's (the outermost handlers' net)."""
    try:
        yield
    except MMQError:
        raise
    except Exception as exc:
        translated = translate(exc)
        if translated is None:
            raise
        raise translated from None


def third_party_error_types() -> tuple[type[Exception], ...]:
    """The libraries' base exception types that `translate` turns into mmq's (for exception handlers)."""
    import httpx
    import redis
    from botocore.exceptions import BotoCoreError, ClientError

    return (redis.RedisError, BotoCoreError, ClientError, httpx.HTTPError)


def translate(exc: BaseException) -> MMQError | None:
    """The mmq error for a redis-py, botocore or httpx exception; None for anything else."""
    if isinstance(exc, MMQError):
        return exc
    translated = from_redis(exc, None) or from_botocore(exc, None, "")
    if translated is None:
        request_url = _request_url(exc)
        translated = from_httpx(exc, "server", request_url or "")
    return translated


# -- Redis -------------------------------------------------------------------------------------


def from_redis(exc: BaseException, address: str | None) -> MMQError | None:
    import redis
    from redis import exceptions as rx

    if not isinstance(exc, redis.RedisError):
        return None
    at, detail = f" at {address}" if address else "", _one_line(exc)
    if isinstance(exc, (rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError)):
        return ConfigurationError(f"Redis{at} refused mmq's credentials (the user and password of "
                                  f"MMQ_BROKER_URL): {detail}")
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        if isinstance(_root_cause(exc), ssl.SSLCertVerificationError):
            return ConfigurationError(f"Redis's TLS certificate{at} was not accepted (is MMQ_REDIS_CA_FILE "
                                      f"the CA that signed it?): {detail}")
        return BrokerUnavailable(f"Redis unreachable{at}: {detail}")
    if isinstance(exc, rx.InvalidResponse):
        return BrokerUnavailable(f"Redis unreachable{at}: what answers there does not speak Redis ({detail})")
    if isinstance(exc, rx.OutOfMemoryError):
        return BrokerUnavailable(f"Redis{at} is full (maxmemory) and takes no writes: {detail}")
    if isinstance(exc, rx.ReadOnlyError):
        return BrokerUnavailable(f"Redis{at} is a read-only replica now (a failover under way?): {detail}")
    if isinstance(exc, (rx.TryAgainError, rx.ClusterDownError)):
        return BrokerUnavailable(f"Redis{at} cannot serve now: {detail}")
    return BrokerError(f"Redis{at} refused an operation: {detail}")


def redis_address(client: Any) -> str | None:
    """Where a redis-py client connects: host:port, a socket path, or a Sentinel master's name."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return None
    service = getattr(pool, "service_name", None)
    if service is not None:  # through Sentinel
        sentinels = [_pool_address(s.connection_pool) for s in pool.sentinel_manager.sentinels]
        return f"master {service!r} of the sentinels {', '.join(sentinels)}"
    return _pool_address(pool)


def _pool_address(pool: Any) -> str:
    options = getattr(pool, "connection_kwargs", {})
    if options.get("path"):
        return str(options["path"])
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"


# -- S3 ----------------------------------------------------------------------------------------


def from_botocore(exc: BaseException, endpoint: str | None, where: str) -> MMQError | None:
    from botocore import exceptions as bx

    if not isinstance(exc, (bx.BotoCoreError, bx.ClientError)):
        return None
    at, detail = f" at {endpoint}" if endpoint else "", _one_line(exc)
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return _from_s3_answer(status, str(error.get("Code", "")), str(error.get("Message", "")), at, where)
    # Refused, timed out, cut off mid-answer: the store is away, for now.
    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError)):
        return StorageUnavailable(f"artifact store unreachable{at}: {detail}")
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return ConfigurationError(f"no credentials for the artifact store{at}: set AWS_ACCESS_KEY_ID and "
                                  f"AWS_SECRET_ACCESS_KEY ({detail})")
    return StorageError(f"artifact store error{at}: {detail}")


def _from_s3_answer(status: int | None, code: str, message: str, at: str, where: str) -> MMQError:
    """S3's answer to mmq's own signed request (through boto3) as an mmq error."""
    if code in _NOT_FOUND_CODES:
        return ArtifactNotFound(f"no such artifact: {where}")
    if code in _CREDENTIAL_CODES:
        return ConfigurationError(f"the artifact store{at} refused mmq's credentials (AWS_ACCESS_KEY_ID and "
                                  f"AWS_SECRET_ACCESS_KEY): {code}")
    if status is not None and status >= 500:
        return StorageUnavailable(f"artifact store failed{at} ({code or status}) on {where}")
    return StorageError(f"artifact store{at} refused {where}: {code} {_one_line(message)}".strip())


def presigned_answer_error(status: int, body: str, url: str, what: str) -> MMQError:
    """The mmq error for the artifact store's refusal (status 300 or more) of a presigned URL for
    `what`: 403 is an expired or foreign URL, 404 a missing object, 5xx the store unavailable."""
    code = _xml_field(body, "Code")
    message = _xml_field(body, "Message")
    said = f"{status} {code}{': ' + message if message else ''}".strip()
    if status == 403:
        return ArtifactAccessDenied(f"the artifact store at {_origin(url)} refused the presigned URL of "
                                    f"{what} ({said}): it expired, or was not made for this request")
    if status == 404 or code in _NOT_FOUND_CODES:
        return ArtifactNotFound(f"no such artifact: {what} (the artifact store answered {said})")
    if status >= 500:
        return StorageUnavailable(f"artifact store unavailable at {_origin(url)}: it answered {said} "
                                  f"for {what}")
    return StorageError(f"the artifact store at {_origin(url)} refused {what}: {said}")


def _xml_field(body: str, name: str) -> str:
    found = re.search(rf"<{name}>(.*?)</{name}>", body or "", flags=re.DOTALL)
    return _one_line(found.group(1)) if found else ""


def _s3_uri(bucket: str | None, key: str | None) -> str:
    return f"s3://{bucket or '?'}/{key or ''}".rstrip("/")


# -- HTTP --------------------------------------------------------------------------------------


def from_httpx(exc: BaseException, service: str, url: str) -> MMQError | None:
    import httpx

    if not isinstance(exc, httpx.HTTPError):
        return None
    address, detail = _origin(url), _one_line(exc)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return ConfigurationError(f"the {service} URL {address!r} is not an http(s) URL: {detail}")
    if isinstance(exc, httpx.TransportError):  # refused, timed out, cut off, a proxy in the way
        unavailable = _UNAVAILABLE.get(service, ServiceUnavailable)
        return unavailable(f"{service} unreachable at {address}: {detail}")
    if service == STORAGE:
        return StorageError(f"artifact store at {address}: {detail}")
    return GatewayError(f"{service} at {address}: {detail}", status=0, code="http")


def _request_url(exc: BaseException) -> str | None:
    try:
        return str(exc.request.url)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError for an error without a request
        return None


def _origin(url: str) -> str:
    """scheme://host:port of a URL: never its path or query (a presigned URL's signature)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.scheme and parts.netloc else url


# -- both --------------------------------------------------------------------------------------


def _one_line(value: BaseException | str) -> str:
    """A message on one line (the CLI prints one line per error); an exception without one, by its type."""
    text = " ".join(str(value).split())
    return text or (type(value).__name__ if isinstance(value, BaseException) else "")


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc
