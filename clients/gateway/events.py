"""Server-sent events of a job: each status and progress event as it is written, then the end.

Read from the job's event stream by the asyncio job store, so a thousand open streams cost a
thousand idle coroutines, not a thousand threads. `Last-Event-ID` (or `?after=`) resumes after
the last event a client saw.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from mmq.tasks.errors import JobNotFound
from mmq.tasks.records import AsyncJobStore
from mmq.tasks.webhooks import event_name

HEARTBEAT_MS = 5000  # a comment line this often keeps proxies from closing an idle stream


async def job_events(jobs: AsyncJobStore, job_id: str, after: str = "0") -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    try:
        async for item in jobs.follow(job_id, after=after, idle_ms=HEARTBEAT_MS):
            if item is None:
                yield ": keep-alive\n\n"
                continue
            event_id, event = item
            yield f"id: {event_id}\nevent: {event_name(event)}\ndata: {json.dumps(event)}\n\n"
    except JobNotFound:
        return  # expired while followed: the stream just ends
