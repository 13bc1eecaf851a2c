"""Artifacts: binary media kept in S3-compatible storage, passed around as small references.

Keys are content-addressed (`[tenants/<tenant>/]blobs/<sha256>.<ext>`): storing the same bytes
twice writes the same object, so a re-delivered step cannot leave a second copy behind. The
artifacts of a tenant's jobs live under the tenant's prefix (see `tenants.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactNotFound, InvalidInput, StorageError
from .media import extension_for, sniff_media_type
from .translation import storage_errors


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
        return asdict(self)

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


class ArtifactStore:
    """Put, get and presign artifacts in one bucket, through a boto3 S3 client handed in."""

    def __init__(self, s3: Any, *, bucket: str, presign_expiry_s: int = 3600, presigner: Any = None) -> None:
        self._s3 = s3
        self._presigner = presigner or s3  # signs for the endpoint that callers see, when it differs
        self.bucket = bucket
        self.presign_expiry_s = presign_expiry_s
        self._bucket_checked = False

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
        return cls(client(settings.s3_endpoint_url), bucket=settings.s3_bucket,
                   presign_expiry_s=settings.presign_expiry_s, presigner=client(public) if public else None)

    def put_bytes(self, data: bytes, media_type: str | None = None, *, prefix: str = "") -> ArtifactRef:
        """Store `data` under `prefix` (once: an existing object with the same content is reused)."""
        media_type = media_type or sniff_media_type(data)
        digest = hashlib.sha256(data).hexdigest()
        key = f"{prefix}blobs/{digest}.{extension_for(media_type)}"
        ref = ArtifactRef(uri=f"s3://{self.bucket}/{key}", media_type=media_type, sha256=digest, size=len(data))
        self.ensure_bucket()
        if not self._exists(key):
            self._call("put_object", Bucket=self.bucket, Key=key, Body=data, ContentType=media_type,
                       Metadata={"sha256": digest})
        return ref

    def put_file(self, path: Path | str, media_type: str | None = None, *, prefix: str = "") -> ArtifactRef:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
        return self.put_bytes(data, media_type, prefix=prefix)

    def get_bytes(self, ref: ArtifactRef) -> bytes:
        response = self._call("get_object", Bucket=ref.bucket, Key=ref.key)
        return response["Body"].read()

    def download(self, ref: ArtifactRef, path: Path | str) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / Path(ref.key).name
        path.write_bytes(self.get_bytes(ref))
        return path

    def presigned_url(self, ref: ArtifactRef, expiry_s: int | None = None) -> str:
        return self._presign("get_object", ref.bucket, ref.key, expiry_s)

    def presigned_put(self, key: str, expiry_s: int | None = None) -> str:
        """A URL to which anyone holding it may PUT one object at `key`, until it expires."""
        self.ensure_bucket()
        return self._presign("put_object", self.bucket, key, expiry_s)

    def _presign(self, method: str, bucket: str, key: str, expiry_s: int | None) -> str:
        # Signing is local, but fails without credentials: translated like any call.
        with storage_errors(self._presigner.meta.endpoint_url, bucket=bucket, key=key):
            return self._presigner.generate_presigned_url(method, Params={"Bucket": bucket, "Key": key},
                                                          ExpiresIn=expiry_s or self.presign_expiry_s)

    def size(self, ref: ArtifactRef) -> int:
        """The stored object's size in bytes (`ArtifactNotFound` when there is none)."""
        return int(self._call("head_object", Bucket=ref.bucket, Key=ref.key)["ContentLength"])

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
