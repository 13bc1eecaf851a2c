"""What every route of the gateway shares: one `Gateway` per app, built once at start-up.

It holds the direct client (which does the work), the key store, the uploads, the input resolver
and the job page tokens, and says who may read which job record and how the API shows one.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi.security import HTTPAuthorizationCredentials

from mmq.tasks.artifact_walk import map_artifacts
from mmq.tasks.artifacts import ArtifactRef
from mmq.tasks.errors import AuthenticationFailed, JobNotFound
from mmq.tasks.records import AsyncJobStore, JobRecord
from mmq.tasks.settings import Settings

from ..direct import DirectTransport
from ..keys import KeyStore
from .auth import PageTokens
from .inputs import InputResolver
from .uploads import Uploads


class Gateway:
    """What the routes share: the direct client, the key store, page tokens, the input resolver."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # One redis-py client for the job records, the keys, the uploads, the page secret and the metrics.
        self.redis = settings.redis.sync_client()
        self.transport = DirectTransport(settings, redis=self.redis)
        self.keys = KeyStore(self.redis)
        self.uploads = Uploads(settings, self.transport.store, self.redis)
        self.resolver = InputResolver(settings, self.transport.store, self.uploads)
        self.async_jobs = AsyncJobStore.from_settings(settings)  # for the event streams

    @functools.cached_property
    def tokens(self) -> PageTokens:
        """Made on first use, so that building the app (for its OpenAPI document) needs no Redis."""
        return PageTokens.from_redis(self.redis, expiry_s=self.settings.presign_expiry_s)

    def tenant(self, credentials: HTTPAuthorizationCredentials | None) -> str:
        if credentials is None:
            raise AuthenticationFailed("missing API key: send it as 'Authorization: Bearer <key>'")
        return self.keys.authenticate(credentials.credentials)

    def readable_record(self, job_id: str, credentials: HTTPAuthorizationCredentials | None,
                        token: str | None) -> JobRecord:
        """The record, if the caller may read it: its owner's key, or a page token for it."""
        if token is not None and credentials is None:
            self.tokens.check(job_id, token)
            return self.transport.record(job_id)
        return self.owned_record(job_id, self.tenant(credentials))

    def owned_record(self, job_id: str, tenant: str) -> JobRecord:
        record = self.transport.record(job_id)
        if record.owner != tenant:  # exactly what an unknown id gets: no hint that it exists
            raise JobNotFound(f"no job with id {job_id!r} (unknown, or expired)")
        return record

    def view(self, record: JobRecord) -> dict[str, Any]:
        """The record as the API shows it: artifacts with presigned URLs, links to more."""
        body = _with_urls(record.to_dict(), self.transport.store)
        body.pop("owner")  # the caller is the owner, or holds a page link that need not name it
        waiting = self.transport.waiting(record)
        if waiting:
            body["waiting"] = waiting
        body["links"] = {"self": f"/v1/jobs/{record.id}", "events": f"/v1/jobs/{record.id}/events",
                         "page": f"/jobs/{record.id}?token={self.tokens.issue(record.id)}"}
        return body

    async def aclose(self) -> None:
        await self.async_jobs.aclose()
        self.transport.close()


def _with_urls(value: Any, store: Any) -> Any:
    """A job view with a presigned `url` beside every artifact reference in it."""
    return map_artifacts(value, lambda ref: {**ref, "url": store.presigned_url(ArtifactRef.from_dict(ref))},
                         through_mappings=True)
