"""Server-sent events of a job: each status and progress event as it is written, then the end.

Read straight from the job's event stream with the asyncio Redis client, so a thousand open
streams cost a thousand idle coroutines, not a thousand threads. `Last-Event-ID` (or `?after=`)
resumes after the last event a client saw.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from mmq.tasks.jobs import EVENTS_SUFFIX, KEY_PREFIX, QUEUED_EVENT, JobStatus
from mmq.tasks.webhooks import event_name

HEARTBEAT_MS = 5000  # a comment line this often keeps proxies from closing an idle stream


async def job_events(redis: Any, job_id: str, after: str = "0") -> AsyncIterator[str]:
    key = KEY_PREFIX + job_id + EVENTS_SUFFIX
    yield "retry: 2000\n\n"
    if after == "0":  # from the start: the queued event, which is not kept in the stream
        after, event = QUEUED_EVENT
        yield f"id: {after}\nevent: {event_name(event)}\ndata: {json.dumps(event)}\n\n"
    while True:
        reply = await redis.xread({key: after}, block=HEARTBEAT_MS, count=200)
        if not reply:
            status = await redis.hget(KEY_PREFIX + job_id, "status")
            if status is None or JobStatus(status.decode()).terminal:
                return  # ended (its end event already read) or expired
            yield ": keep-alive\n\n"
            continue
        [(_key, entries)] = reply
        for entry_id, data in entries:
            after = entry_id.decode()
            event = json.loads(data[b"event"])
            yield f"id: {after}\nevent: {event_name(event)}\ndata: {json.dumps(event)}\n\n"
            if event["type"] == "job" and JobStatus(event["status"]).terminal:
                return
