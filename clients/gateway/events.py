"""Server-sent events of a job: each status and progress event as it is written, then the end.

Read from the job's event stream by the asyncio job store, so a thousand open streams cost a
thousand idle coroutines, not a thousand threads. `Last-Event-ID` (or `?after=`) resumes after
the last event a client saw.

When the stream cannot go on (Redis went away after it opened: before, the request is a 503), its
last event is `event: error` whose data is the gateway's error body (`{"error": {"code":
"unavailable", "message", "service": "redis"}}`), without an id, so that a client resuming with
`Last-Event-ID` misses nothing; the gateway logs it in one line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from mmq.tasks.errors import JobNotFound, MMQError
from mmq.tasks.records import AsyncJobStore
from mmq.tasks.translation import translate
from mmq.tasks.webhooks import event_name

from ..error_codes import error_detail

log = logging.getLogger(__name__)
HEARTBEAT_MS = 5000  # a comment line this often keeps proxies from closing an idle stream
ERROR_EVENT = "error"


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
    except Exception as exc:  # Redis away mid-stream, say: translated, it is the stream's last event
        error = translate(exc)
        if error is None:
            raise  # not Redis's: a surprise, with its traceback
        log.warning("event stream of job %s ended: %s: %s", job_id, type(error).__name__, error)
        yield error_event(error)


def error_event(error: MMQError) -> str:
    """The server-sent event that ends a stream with `error`, in the body of the gateway's answers."""
    _, detail = error_detail(error)
    return f"event: {ERROR_EVENT}\ndata: {json.dumps({'error': detail})}\n\n"
