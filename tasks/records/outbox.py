"""The webhook outbox, as its readers see it: the events that jobs' webhooks want, put there by
the job store in the same Redis step that records them (see `layout.py`).

Readers (webhook dispatchers) share it as one consumer group: each entry goes to one of them, and
an entry whose reader died before finishing is claimed by another once it has been idle long
enough. An entry is removed when its reader is done with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..translation import redis_errors
from .layout import WEBHOOK_OUTBOX


@dataclass(frozen=True)
class OutboxEntry:
    """One event a job's webhook wants: the job, the event's name (`job.succeeded`), the event."""

    id: str  # the entry's stream id: the same each time it is read, so deliveries can be deduplicated
    job_id: str
    name: str
    event: dict[str, Any]


class WebhookOutbox:
    """The outbox on a redis.asyncio client, read by the consumer group `group`."""

    def __init__(self, redis: Any, *, group: str) -> None:
        self._redis = redis
        self.group = group

    async def join(self) -> None:
        """Make the consumer group, unless another reader made it first."""
        import redis

        with redis_errors(self._redis):  # outside: it would translate BUSYGROUP before it is seen
            try:
                await self._redis.xgroup_create(WEBHOOK_OUTBOX, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def take(self, consumer: str, *, count: int, block_ms: int, claim_idle_ms: int) -> list[OutboxEntry]:
        """Entries for `consumer`: those left idle `claim_idle_ms` by a reader that went away, then
        new ones (waiting up to `block_ms` for them). Entries trimmed before they were read are
        let go on the way: nothing is left of them to deliver."""
        with redis_errors(self._redis):
            _, claimed, _ = await self._redis.xautoclaim(WEBHOOK_OUTBOX, self.group, consumer,
                                                         min_idle_time=claim_idle_ms, start_id="0", count=count)
            fresh = await self._redis.xreadgroup(self.group, consumer, {WEBHOOK_OUTBOX: ">"}, count=count,
                                                 block=block_ms)
            entries = []
            for entry_id, data in [*claimed, *(entry for _, stream in fresh or [] for entry in stream)]:
                if data:
                    entries.append(OutboxEntry(id=entry_id.decode(), job_id=data[b"job"].decode(),
                                               name=data[b"name"].decode(), event=json.loads(data[b"event"])))
                else:  # a claimed entry trimmed meanwhile has no data
                    await self._redis.xack(WEBHOOK_OUTBOX, self.group, entry_id)
        return entries

    async def done(self, entry_id: str) -> None:
        """The entry's delivery attempt is recorded: no reader needs it again."""
        with redis_errors(self._redis):
            await self._redis.xack(WEBHOOK_OUTBOX, self.group, entry_id)
            await self._redis.xdel(WEBHOOK_OUTBOX, entry_id)
