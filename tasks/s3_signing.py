"""Presigned S3 URLs (AWS Signature Version 4, in the query string), signed here, not by botocore.

The workers sign a URL for every input they read and every output they store (see
`ArtifactStore.get_bytes`), and the client one for every file it uploads. botocore's presigner
spends about 0.3 ms of CPU on each, in its event hooks and endpoint rules; the signature itself is
a hash and five HMACs. Path-style URLs only (what `ArtifactStore` asks of every S3-compatible
server), the payload unsigned as in every presigned URL. tests/test_artifacts.py checks the URLs
against botocore's, character for character, and against a real S3 server.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
_DEFAULT_PORTS = {"http": "80", "https": "443"}


@dataclass(frozen=True)
class SigningKey:
    """Who signs, and where: an access key pair (and a session's token) for one endpoint and region."""

    access_key: str
    secret_key: str
    token: str | None
    endpoint_url: str
    region: str


def presign(key: SigningKey, method: str, bucket: str, object_key: str, *, expires_s: int,
            headers: Mapping[str, str] | None = None, now: datetime.datetime | None = None) -> str:
    """A URL that lets its holder make this one request until `expires_s` from `now`. The
    request must send exactly `headers` (they are signed, with the host)."""
    now = now or datetime.datetime.now(datetime.UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    endpoint = urlsplit(key.endpoint_url)
    host = _canonical_host(endpoint.scheme, endpoint.netloc)
    path = f"{endpoint.path.rstrip('/')}/{_encode(bucket)}/{_encode(object_key, safe='/~')}"
    signed = {"host": host, **{name.lower(): " ".join(value.split()) for name, value in (headers or {}).items()}}
    signed_names = ";".join(sorted(signed))
    scope = f"{day}/{key.region}/s3/aws4_request"
    query = {"X-Amz-Algorithm": ALGORITHM, "X-Amz-Credential": f"{key.access_key}/{scope}", "X-Amz-Date": stamp,
             "X-Amz-Expires": str(expires_s), "X-Amz-SignedHeaders": signed_names}
    if key.token:
        query["X-Amz-Security-Token"] = key.token
    canonical_query = "&".join(f"{_encode(name)}={_encode(value)}" for name, value in sorted(query.items()))
    canonical_request = "\n".join([method, path, canonical_query,
                                   "".join(f"{name}:{signed[name]}\n" for name in sorted(signed)),
                                   signed_names, "UNSIGNED-PAYLOAD"])
    string_to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
    signing_key = ("AWS4" + key.secret_key).encode()
    for part in (day, key.region, "s3", "aws4_request"):
        signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{endpoint.scheme}://{endpoint.netloc}{path}?{canonical_query}&X-Amz-Signature={signature}"


def _canonical_host(scheme: str, netloc: str) -> str:
    """The Host header a client sends: without the port when it is the scheme's own."""
    host, _, port = netloc.rpartition(":")
    return host if host and port == _DEFAULT_PORTS.get(scheme) else netloc


def _encode(value: str, safe: str = "-_.~") -> str:
    return quote(value.encode(), safe=safe)
