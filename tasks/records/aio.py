"""`AsyncJobStore`: the job record for asyncio readers, on redis-py's asyncio client.

The gateway's event streams and the webhook dispatcher run on an event loop, where a blocking
Redis call would stall every other request: they read the record here, not through `JobStore`.
They read only what they need of it (its status, its event stream, its webhook), and the
dispatcher appends its delivery attempts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ..translation import redis_errors
from . import layout
from .following import EventCursor
from .model import Event, JobStatus, WebhookTarget
from .store import not_found


class AsyncJobStore:
    """Reads job records (and appends webhook deliveries) without blocking the event loop."""

    def __init__(self, redis: Any, *, ttl_s: int) -> None:
        self._redis = redis  # a redis.asyncio client
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: Any) -> AsyncJobStore:
        """A store on a client of its own, closed by `aclose`."""
        return cls(settings.redis.async_client(), ttl_s=settings.finished_ttl_s)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def status(self, job_id: str) -> JobStatus:
        with redis_errors(self._redis):
            raw = await self._redis.hget(layout.record_key(job_id), "status")
        if raw is None:
            raise not_found(job_id)
        return JobStatus(raw.decode())

    async def events(self, job_id: str, after: str = "0", block_ms: int = 1000, *,
                           stream_fresh: bool = False) -> list[Event]:
        """Events after the stream id `after`, waiting up to `block_ms` for the first one; from the
        start (`after` "0"), the queued event comes first. `stream_fresh`: the stream brought events a
        moment ago, so the record need not be asked for the end event first (see `following`)."""
        if after == "0":
            return [layout.QUEUED_EVENT]
        with redis_errors(self._redis):
            # A finished job's stream is gone: its end event is in the record (checked again after
            # a read that brought nothing, since the job may have ended meanwhile).
            ended = None if stream_fresh else await self._redis.hget(layout.record_key(job_id), "end_event")
            if ended is None:
                reply = await self._redis.xread({layout.events_key(job_id): after}, block=block_ms,
                                                count=layout.EVENTS_PER_READ)
                if reply:
                    return layout.decode_events(reply)
                ended = await self._redis.hget(layout.record_key(job_id), "end_event")
        return layout.kept_end_event(ended)

    async def follow(self, job_id: str, *, after: str = "0", idle_ms: int = 5000) -> AsyncIterator[Event | None]:
        """The job's events after `after` as they come, until it ends; None after each `idle_ms`
        without one (a server-sent event stream's cue for a keep-alive). `JobNotFound` when its
        record expired meanwhile."""
        cursor = EventCursor(after)
        for event in cursor.opening():
            yield event
        while not cursor.done:
            batch = await self.events(job_id, cursor.after, block_ms=idle_ms, stream_fresh=cursor.stream_fresh)
            for event in cursor.take(batch):
                yield event
            if not batch:
                cursor.idle(await self.status(job_id))
                if not cursor.done:
                    yield None

    async def webhook_target(self, job_id: str) -> WebhookTarget | None:
        """Where the job's webhook deliveries go; None once its record expired (nobody to tell)."""
        with redis_errors(self._redis):
            raw = await self._redis.hget(layout.record_key(job_id), "spec")
        return None if raw is None else layout.webhook_target_from_spec(raw)

    async def record_delivery(self, job_id: str, attempt: Mapping[str, Any]) -> None:
        """Append one webhook delivery attempt to the job's record."""
        key = layout.deliveries_key(job_id)
        with redis_errors(self._redis):
            async with self._redis.pipeline() as pipe:
                pipe.rpush(key, json.dumps(attempt))
                pipe.expire(key, self.ttl_s)
                await pipe.execute()
