"""Uploads: files PUT straight to S3 through a presigned URL, adopted as artifacts without the
gateway reading them, and deleted once used or expired.

The client declares the file's SHA-256, size and media type when it asks for the URL, and all three
are signed into it (x-amz-checksum-sha256, Content-Length, Content-Type): S3 itself refuses a body
whose SHA-256 differs (BadDigest) and a length or type other than declared (SignatureDoesNotMatch).
A job that names the upload gets it as a content-addressed artifact by a server-side copy; what the
gateway learns of the file comes from HeadObject (size, type, the checksum S3 verified), never from
its bytes. The upload object is then deleted. An upload requested without a SHA-256 (the protocol
before this one, deprecated) is read once by the gateway to hash it.

An upload no job used is deleted by the sweep `upload_expiry_s` after its URL was issued; the URL
lives at most half as long, so a PUT started just before its URL lapsed finishes before the sweep.
Every gateway replica sweeps; deleting twice is harmless.

Redis layout (owned here):
  mmq:uploads:pending        sorted set: upload object key, scored by the time it is to be deleted
  mmq:upload:<object key>    JSON: the artifact reference the upload became, so that a retried or
                             second job naming the same upload gets the same file
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from typing import Any

from mmq.tasks.artifacts import ArtifactRef, ArtifactStore, StoredFile, signed_put_headers
from mmq.tasks.errors import ArtifactNotFound, InvalidInput, MMQError, PayloadTooLarge
from mmq.tasks.redis_connection import redis_errors
from mmq.tasks.settings import Settings
from mmq.tasks.tenants import artifact_prefix

log = logging.getLogger(__name__)

PENDING_KEY = "mmq:uploads:pending"
ADOPTED_PREFIX = "mmq:upload:"
UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
SWEEP_BATCH = 100
SWEEP_MAX_INTERVAL_S = 60.0
SWEEP_MIN_INTERVAL_S = 0.5


def uploads_folder(tenant: str) -> str:
    """Where the uploads of `tenant` wait to be used: not artifacts yet, their content unchecked."""
    return f"{artifact_prefix(tenant)}uploads/"


def upload_key(tenant: str, upload_id: str) -> str:
    return uploads_folder(tenant) + upload_id


def check_file_size(name: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise PayloadTooLarge(f"{name}: the file is over the limit of {max_bytes} bytes (MMQ_MAX_UPLOAD_BYTES)",
                              field=name)


class Uploads:
    """Issue upload URLs, turn uploads into artifacts, sweep the expired ones."""

    def __init__(self, settings: Settings, store: ArtifactStore, redis: Any) -> None:
        self.settings = settings
        self.store = store
        self.redis = redis

    @property
    def url_expiry_s(self) -> int:
        return max(1, min(self.settings.presign_expiry_s, int(self.settings.upload_expiry_s / 2)))

    def create(self, tenant: str, *, media_type: str | None, size: int | None, sha256: str | None) -> dict[str, Any]:
        """A new upload: its id, the presigned PUT and the headers it must carry, its job input."""
        declared = self._declared(media_type, size, sha256)
        upload_id = secrets.token_hex(16)
        key = upload_key(tenant, upload_id)
        issued = time.time()
        with redis_errors(), self.redis.pipeline() as pipe:  # booked for deletion before the URL exists
            pipe.zadd(PENDING_KEY, {key: issued + self.settings.upload_expiry_s})
            pipe.expire(PENDING_KEY, int(self.settings.upload_expiry_s) + self.settings.record_ttl_s)
            pipe.execute()
        url = self.store.presigned_put(key, self.url_expiry_s, declared=declared)
        return {"id": upload_id, "url": url, "method": "PUT",
                "headers": signed_put_headers(declared) if declared else {},
                "max_bytes": self.settings.max_upload_bytes, "expires_at": issued + self.url_expiry_s,
                "input": {"upload": upload_id}}

    def _declared(self, media_type: str | None, size: int | None, sha256: str | None) -> StoredFile | None:
        if size is not None and size > self.settings.max_upload_bytes:
            raise PayloadTooLarge(f"size: {size} bytes is over the limit of {self.settings.max_upload_bytes}"
                                  " (MMQ_MAX_UPLOAD_BYTES)", field="size")
        if sha256 is None:
            return None
        for name, value in (("size", size), ("media_type", media_type)):
            if value is None:
                raise InvalidInput(f"{name}: required beside sha256 (S3 checks all three on the upload)", field=name)
        return StoredFile(size=int(size or 0), media_type=str(media_type), sha256=sha256)

    def take(self, name: str, upload_id: Any, tenant: str) -> ArtifactRef:
        """The artifact that the upload `upload_id` of `tenant` is, for the job input `name`."""
        if not isinstance(upload_id, str) or not UPLOAD_ID.fullmatch(upload_id):
            raise InvalidInput(f"{name}: {upload_id!r} is not an upload id", field=name)
        key = upload_key(tenant, upload_id)
        adopted = self._adopted(key)
        if adopted is not None:
            return adopted
        try:
            stored = self.store.stored_file(key)
        except ArtifactNotFound:
            adopted = self._adopted(key)  # another request took it meanwhile
            if adopted is not None:
                return adopted
            raise InvalidInput(f"{name}: upload {upload_id} has no file (not uploaded yet, or not yours, or expired)",
                               field=name) from None
        check_file_size(name, stored.size, self.settings.max_upload_bytes)
        ref = self._as_blob(key, stored, artifact_prefix(tenant))
        with redis_errors():
            self.redis.set(ADOPTED_PREFIX + key, json.dumps(ref.to_dict()), ex=self.settings.record_ttl_s)
        self.store.delete(key)  # its sweep entry stays until its deadline, for a PUT still under way
        return ref

    def _as_blob(self, key: str, stored: StoredFile, prefix: str) -> ArtifactRef:
        if stored.sha256 is not None:
            return self.store.copy_to_blob(key, stored, prefix=prefix)
        log.warning("upload %s was made without a declared sha256 (deprecated): reading it to hash it", key)
        unchecked = ArtifactRef(uri=f"s3://{self.store.bucket}/{key}", media_type="", sha256="", size=stored.size)
        return self.store.put_bytes(self.store.get_bytes(unchecked), prefix=prefix)

    def _adopted(self, key: str) -> ArtifactRef | None:
        with redis_errors():
            raw = self.redis.get(ADOPTED_PREFIX + key)
        return ArtifactRef.from_dict(json.loads(raw)) if raw else None

    # -- expiry ----------------------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> int:
        """Delete every upload whose deadline has passed; returns how many were due."""
        swept = 0
        while True:
            with redis_errors():
                due = self.redis.zrangebyscore(PENDING_KEY, "-inf", now or time.time(), start=0, num=SWEEP_BATCH)
            for member in due:
                self.store.delete(member.decode() if isinstance(member, bytes) else member)
                with redis_errors():
                    self.redis.zrem(PENDING_KEY, member)
            swept += len(due)
            if len(due) < SWEEP_BATCH:
                return swept

    async def sweep_until(self, stop: asyncio.Event) -> None:
        """Sweep every little while (a quarter of the expiry, within bounds) until `stop` is set."""
        interval = min(SWEEP_MAX_INTERVAL_S, max(SWEEP_MIN_INTERVAL_S, self.settings.upload_expiry_s / 4))
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.sweep)
            except MMQError as exc:  # S3 or Redis away for a moment: the entries wait for the next round
                log.warning("upload sweep failed, retrying in %.0f s: %s", interval, exc)
            except Exception:  # anything else (a Redis failover's READONLY, ...): logged, and swept again
                log.exception("upload sweep failed unexpectedly, retrying in %.0f s", interval)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
