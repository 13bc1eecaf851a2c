"""Artifacts: binary media kept in S3-compatible storage, passed around as small references.

Keys are content-addressed (`[tenants/<tenant>/]blobs/<sha256>.<ext>`): storing the same bytes
twice writes the same object, so a re-delivered step cannot leave a second copy behind. The
artifacts of a tenant's jobs live under the tenant's prefix (see `tenants.py`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactNotFound, InvalidInput, StorageError
from .media_types import extension_for, sniff_media_type
from .plain_http import KeepAlive
from .s3_signing import SigningKey, presign
from .translation import storage_errors

_PLAIN_REQUEST_EXPIRY_S = 60  # a URL that `get_bytes` or `put_bytes` signs for its own request, made at once


@dataclass(frozen=True)
class ArtifactRef:
    """Where an artifact lives and what it is; the only form in which media crosses Redis."""

    uri: str
    media_type: str
    sha256: str
    size: int

    @property
    def bucket(self) -> str:
        return self.uri.removeprefix("s3://").split("/", 1)[0]

    @property
    def key(self) -> str:
        return self.uri.removeprefix("s3://").split("/", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        # (not `asdict`, which deep-copies: a bulk submission makes one per input of every job)
        return {"uri": self.uri, "media_type": self.media_type, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, field: str = "artifact") -> ArtifactRef:
        try:
            ref = cls(uri=str(data["uri"]), media_type=str(data["media_type"]),
                      sha256=str(data["sha256"]), size=int(data["size"]))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # Overflow: a size of Infinity
            raise InvalidInput(f"{field} is not an artifact reference ({exc})", field=field) from None
        if not ref.uri.startswith("s3://") or "/" not in ref.uri.removeprefix("s3://"):
            raise InvalidInput(f"{field} has an invalid artifact URI {ref.uri!r}", field=field)
        return ref

    @staticmethod
    def is_ref(value: Any) -> bool:
        return isinstance(value, Mapping) and {"uri", "media_type", "sha256", "size"} <= value.keys()


@dataclass(frozen=True)
class StoredFile:
    """What S3 says of an object without its bytes being read: its size, its type, and its SHA-256
    (hex) when it was stored with a checksum, which S3 verified against the body it received."""

    size: int
    media_type: str
    sha256: str | None = None


def checksum_header(sha256: str) -> str:
    """A hex SHA-256 as S3 carries it: base64 of the raw digest (x-amz-checksum-sha256)."""
    return base64.b64encode(bytes.fromhex(sha256)).decode()


def signed_put_headers(declared: StoredFile) -> dict[str, str]:
    """The headers a PUT to `ArtifactStore.presigned_put(key, declared=...)` must send, exactly
    (Content-Length too, which every HTTP client sends by itself)."""
    headers = {"Content-Type": declared.media_type}
    if declared.sha256 is not None:
        headers["x-amz-checksum-sha256"] = checksum_header(declared.sha256)
    return headers


def _hex_checksum(header: str | None) -> str | None:
    if not header:
        return None
    try:
        digest = base64.b64decode(header, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 32 else None


class ArtifactStore:
    """Put, get and presign artifacts in one bucket, through a boto3 S3 client handed in."""

    def __init__(self, s3: Any, *, bucket: str, presign_expiry_s: int = 3600, presigner: Any = None,
                 signing: SigningKey | None = None) -> None:
        self._s3 = s3
        self._presigner = presigner or s3  # signs for the endpoint that callers see, when it differs
        # Signs the store's own plain requests without botocore (s3_signing); None: botocore signs.
        self._signing = signing
        self.bucket = bucket
        self.presign_expiry_s = presign_expiry_s
        self._bucket_checked = False
        self._http = KeepAlive()  # the connections of the plain requests (see `get_bytes`, `put_bytes`)

    @classmethod
    def from_settings(cls, settings: Any) -> ArtifactStore:
        import boto3
        from botocore.config import Config

        def client(endpoint: str | None) -> Any:
            return boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=settings.s3_region,
                aws_access_key_id=settings.aws_access_key_id,
                aws_secret_access_key=settings.aws_secret_access_key,
                # Path-style addressing works with every S3-compatible server; fail fast, retry a little.
                config=Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=60,
                              retries={"max_attempts": 3, "mode": "standard"}, signature_version="s3v4"),
            )

        public = getattr(settings, "s3_public_url", None)
        s3 = client(settings.s3_endpoint_url)
        # Keys in the settings sign the store's own requests here; credentials that boto3 finds
        # itself (a profile, an instance role: they may refresh) are left to botocore.
        keys = settings.aws_access_key_id, settings.aws_secret_access_key
        signing = SigningKey(*keys, token=None, endpoint_url=s3.meta.endpoint_url,
                             region=s3.meta.region_name) if all(keys) else None
        return cls(s3, bucket=settings.s3_bucket, presign_expiry_s=settings.presign_expiry_s,
                   presigner=client(public) if public else None, signing=signing)

    def put_bytes(self, data: bytes, media_type: str | None = None, *, prefix: str = "") -> ArtifactRef:
        """Store `data` under `prefix` (once: an existing object with the same content is reused).

        One conditional PUT of a URL signed here (`If-None-Match: *`: S3 answers 412 when an object
        is at the key already, which, the key being the content's, holds these very bytes; a server
        that ignores the condition writes the same bytes again). Its SHA-256 goes with it, so S3
        refuses a body damaged on the way. Any other answer, and a server that cannot be reached,
        go through boto3 (HeadObject, then PutObject), whose errors say what went wrong."""
        media_type = media_type or sniff_media_type(data)
        ref = self._blob_ref(hashlib.sha256(data).hexdigest(), size=len(data), media_type=media_type, prefix=prefix)
        self.ensure_bucket()
        if self._plain_put(ref, data):
            return ref
        if not self._exists(ref.key):
            self._call("put_object", Bucket=self.bucket, Key=ref.key, Body=data, ContentType=media_type,
                       ChecksumSHA256=checksum_header(ref.sha256))
        return ref

    def _plain_put(self, ref: ArtifactRef, data: bytes) -> bool:
        """True when S3 has the object now (stored by this PUT, or there before it)."""
        checksum = checksum_header(ref.sha256)
        headers = {"Content-Type": ref.media_type, "x-amz-checksum-sha256": checksum, "If-None-Match": "*"}
        try:
            url = self._plain_url("PUT", self.bucket, ref.key, headers,
                                  ContentType=ref.media_type, ChecksumSHA256=checksum, IfNoneMatch="*")
            response = self._http.request("PUT", url, body=data, headers=headers)
        except Exception:  # noqa: BLE001 - unreachable, refused, a CA it does not know: boto3's call says
            return False
        return response.status in (200, 412)

    def copy_to_blob(self, key: str, stored: StoredFile, *, prefix: str = "") -> ArtifactRef:
        """The object at `key` (stored with a checksum) as a content-addressed artifact under
        `prefix`: S3 copies it server-side, unless the same content is there already. Its bytes
        never pass through this process."""
        if stored.sha256 is None:
            raise StorageError(f"s3://{self.bucket}/{key} has no SHA-256 checksum to address it by")
        ref = self._blob_ref(stored.sha256, size=stored.size, media_type=stored.media_type, prefix=prefix)
        if not self._exists(ref.key):
            self._call("copy_object", Bucket=self.bucket, Key=ref.key, CopySource={"Bucket": self.bucket, "Key": key},
                       MetadataDirective="REPLACE", ContentType=stored.media_type, Metadata={"sha256": stored.sha256})
        return ref

    def _blob_ref(self, sha256: str, *, size: int, media_type: str, prefix: str) -> ArtifactRef:
        """Where content with this SHA-256 lives: the same bytes always get the same key."""
        key = f"{prefix}blobs/{sha256}.{extension_for(media_type)}"
        return ArtifactRef(uri=f"s3://{self.bucket}/{key}", media_type=media_type, sha256=sha256, size=size)

    def put_file(self, path: Path | str, media_type: str | None = None, *, prefix: str = "") -> ArtifactRef:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
        return self.put_bytes(data, media_type, prefix=prefix)

    def get_bytes(self, ref: ArtifactRef) -> bytes:
        """The artifact's bytes. Read with a plain GET of a URL signed here (about a millisecond
        less than boto3's request pipeline, for every input of every step); anything but a 200
        answer is read again through boto3, whose errors say what went wrong."""
        data = self._plain_get(ref)
        if data is not None:
            return data
        response = self._call("get_object", Bucket=ref.bucket, Key=ref.key)
        return response["Body"].read()

    def _plain_get(self, ref: ArtifactRef) -> bytes | None:
        try:
            url = self._plain_url("GET", ref.bucket, ref.key)
            response = self._http.request("GET", url)
        except Exception:  # noqa: BLE001 - unreachable, refused, a CA it does not know: boto3's read says
            return None
        return response.data if response.status == 200 else None

    def _plain_url(self, method: str, bucket: str, key: str, headers: Mapping[str, str] | None = None,
                   **params: str) -> str:
        """The URL of one of the store's own requests, made at once: signed here when the settings
        hold the keys, else by botocore (`params`: the same headers, as its operation's parameters)."""
        if self._signing is not None:
            return presign(self._signing, method, bucket, key, expires_s=_PLAIN_REQUEST_EXPIRY_S, headers=headers)
        operation = {"GET": "get_object", "PUT": "put_object"}[method]
        return self._s3.generate_presigned_url(operation, ExpiresIn=_PLAIN_REQUEST_EXPIRY_S,
                                               Params={"Bucket": bucket, "Key": key, **params})

    def download(self, ref: ArtifactRef, path: Path | str) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / Path(ref.key).name
        path.write_bytes(self.get_bytes(ref))
        return path

    def presigned_url(self, ref: ArtifactRef, expiry_s: int | None = None) -> str:
        return self._presign("get_object", ref.bucket, ref.key, expiry_s)

    def presigned_put(self, key: str, expiry_s: int | None = None, *, declared: StoredFile | None = None) -> str:
        """A URL to which anyone holding it may PUT one object at `key`, until it expires.

        With `declared` (its sha256 set), the size, the media type and the checksum are signed into
        the URL: the PUT must send them as `signed_put_headers` says, and S3 refuses a body whose
        SHA-256 differs (BadDigest) or a length or type other than declared (SignatureDoesNotMatch)."""
        self.ensure_bucket()
        params: dict[str, Any] = {}
        if declared is not None and declared.sha256 is not None:
            params.update(ContentLength=declared.size, ContentType=declared.media_type,
                          ChecksumSHA256=checksum_header(declared.sha256))
        return self._presign("put_object", self.bucket, key, expiry_s, **params)

    def _presign(self, method: str, bucket: str, key: str, expiry_s: int | None, **params: Any) -> str:
        # Signing is local, but fails without credentials: translated like any call.
        with storage_errors(self._presigner.meta.endpoint_url, bucket=bucket, key=key):
            return self._presigner.generate_presigned_url(method, Params={"Bucket": bucket, "Key": key, **params},
                                                          ExpiresIn=expiry_s or self.presign_expiry_s)

    def stored_file(self, key: str) -> StoredFile:
        """Size, type and checksum of the object at `key`, from its metadata alone (HeadObject);
        `ArtifactNotFound` when there is none."""
        head = self._call("head_object", Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        return StoredFile(size=int(head["ContentLength"]), media_type=str(head.get("ContentType") or ""),
                          sha256=_hex_checksum(head.get("ChecksumSHA256")))

    def delete(self, key: str) -> None:
        """Remove the object at `key` (nothing happens when there is none)."""
        self._call("delete_object", Bucket=self.bucket, Key=key)

    def ensure_bucket(self) -> None:
        """Create the bucket on first use when it is missing."""
        if self._bucket_checked:
            return
        try:
            self._call("head_bucket", Bucket=self.bucket)
        except ArtifactNotFound:
            self._create_bucket()
        self._bucket_checked = True

    def _create_bucket(self) -> None:
        try:
            self._call("create_bucket", Bucket=self.bucket)
        except StorageError as refused:
            # Clients starting together all find the bucket missing; one creates it and the others
            # are refused (BucketAlreadyOwnedByYou). The bucket being there is all they wanted.
            try:
                self._call("head_bucket", Bucket=self.bucket)
            except ArtifactNotFound:
                raise refused from None

    def _exists(self, key: str) -> bool:
        try:
            self._call("head_object", Bucket=self.bucket, Key=key)
        except ArtifactNotFound:
            return False
        return True

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One boto3 call, its errors translated into mmq's (see translation.py)."""
        with storage_errors(self._s3.meta.endpoint_url, bucket=kwargs.get("Bucket"), key=kwargs.get("Key")):
            return getattr(self._s3, method)(*args, **kwargs)
