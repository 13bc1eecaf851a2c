"""The webhook dispatcher: delivers the events that jobs' webhooks want, signed, with retries.

Events a webhook wants are put in the outbox stream by the job store, in the same Redis step that
records them, so none is announced and then lost. Dispatchers (one in each gateway, or `mmq
webhooks` alone) read the outbox as one consumer group: each event goes to one of them; an event
whose dispatcher died before finishing is claimed by another after `CLAIM_IDLE_MS`. A failed POST is
retried with exponential backoff from a sorted set of due retries, up to the configured attempts.
Every attempt is appended to the job's record.

While Redis is away the dispatcher keeps polling, backing off up to `POLL_BACKOFF_MAX_S`, and says
so in one line when the outage starts and one when it ends (the outbox keeps the events meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import uuid
from typing import Any

from mmq.tasks.errors import ServiceUnavailable
from mmq.tasks.outages import Outage
from mmq.tasks.records import AsyncJobStore, OutboxEntry, WebhookOutbox
from mmq.tasks.settings import Settings
from mmq.tasks.translation import redis_errors
from mmq.tasks.webhooks import DELIVERY_HEADER, EVENT_HEADER, signature_headers

from .keys import read_webhook_secret

log = logging.getLogger(__name__)
GROUP = "mmq-webhooks"
RETRY_KEY = "mmq:webhooks:retry"  # sorted set: delivery JSON by the time it is due
CLAIM_IDLE_MS = 60_000
MAX_BACKOFF_S = 3600.0
# After a poll that failed: wait this long, doubled after each further failure, up to the max.
POLL_BACKOFF_S, POLL_BACKOFF_MAX_S = 0.5, 5.0
# Due retries are leased, not removed: pushed `CLAIM_IDLE_MS` into the future, so that if this
# dispatcher dies mid-attempt another one retries them then; removed once the attempt is recorded.
_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[1] + ARGV[3], member) end
return due
"""


class Dispatcher:
    def __init__(self, settings: Settings, *, consumer: str | None = None) -> None:
        import httpx

        self.settings = settings
        # One asyncio client for the records (their webhooks, their deliveries), the outbox, the
        # tenants' secrets and the retries, which are this dispatcher's own.
        self.redis = settings.redis.async_client()
        self.jobs = AsyncJobStore(self.redis, ttl_s=settings.finished_ttl_s)
        self.outbox = WebhookOutbox(self.redis, group=GROUP)
        self.http = httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False)
        self.consumer = consumer or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._claim_due = self.redis.register_script(_CLAIM_DUE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._joined = False
        self.outage = Outage(log, "webhook dispatcher")

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Deliver until `stop` is set (or forever); through Redis outages, backing off."""
        stop = stop or asyncio.Event()
        failed_polls = 0
        while not stop.is_set():
            try:
                await self._poll()
            except asyncio.CancelledError:
                raise
            except ServiceUnavailable as exc:  # Redis away: said once; the outbox keeps the events
                self.outage.began(exc)
            except Exception:  # anything else is a surprise: its traceback each time
                log.exception("webhook dispatcher: poll failed")
            else:
                self.outage.ended()
                failed_polls = 0
                continue
            failed_polls += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=_poll_backoff_s(failed_polls))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.http.aclose()
        await self.redis.aclose()

    async def _poll(self) -> None:
        if not self._joined:  # here, not before the loop: Redis may be away when the dispatcher starts
            await self.outbox.join()
            self._joined = True
        for entry in await self.outbox.take(self.consumer, count=20, block_ms=500, claim_idle_ms=CLAIM_IDLE_MS):
            self._spawn(self._deliver(_first_delivery(entry), outbox_id=entry.id))
        with redis_errors(self.redis):
            due = await self._claim_due(keys=[RETRY_KEY], args=[time.time(), 20, CLAIM_IDLE_MS / 1000])
        for raw in due:
            self._spawn(self._deliver(json.loads(raw), retry_member=raw))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, delivery: dict[str, Any], *, outbox_id: str | None = None,
                       retry_member: bytes | None = None) -> None:
        try:
            await self._attempt(delivery)
            # The attempt is recorded (and its retry scheduled): done with the entry that asked for it.
            if outbox_id is not None:
                await self.outbox.done(outbox_id)
            if retry_member is not None:
                with redis_errors(self.redis):
                    await self.redis.zrem(RETRY_KEY, retry_member)
        except ServiceUnavailable as exc:  # Redis went away mid-attempt: the entry stays, claimed again later
            self.outage.began(exc)
        except Exception:
            log.exception("webhook delivery %s of job %s failed unexpectedly", delivery["id"], delivery["job"])

    async def _attempt(self, delivery: dict[str, Any]) -> None:
        job_id = delivery["job"]
        target = await self.jobs.webhook_target(job_id)
        if target is None:
            return  # the job expired meanwhile: nobody left to tell
        url = target.url
        secret = await self._secret(target.owner)
        if not url or not secret:
            log.error("job %s has a webhook but no URL or signing secret; not delivered", job_id)
            return
        body = json.dumps({"id": delivery["id"], "type": delivery["name"], "job_id": job_id,
                           "job_name": target.job_name, "event": delivery["event"]}).encode()
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery["id"],
                   EVENT_HEADER: delivery["name"], **signature_headers(secret, body)}
        started = time.time()
        outcome: dict[str, Any] = {"delivery": delivery["id"], "event": delivery["name"], "url": url,
                                   "attempt": delivery["attempt"], "at": started}
        try:
            response = await self.http.post(url, content=body, headers=headers)
            outcome["status_code"] = response.status_code
            outcome["ok"] = 200 <= response.status_code < 300
        except Exception as exc:  # httpx's errors, and anything else the network throws
            outcome["error"] = f"{type(exc).__name__}: {exc}"[:300]
            outcome["ok"] = False
        outcome["duration_ms"] = round((time.time() - started) * 1000, 1)
        if not outcome["ok"] and delivery["attempt"] < self.settings.webhook_max_attempts:
            delay = min(self.settings.webhook_backoff_s * 2 ** (delivery["attempt"] - 1), MAX_BACKOFF_S)
            outcome["retry_at"] = started + delay
            with redis_errors(self.redis):
                await self.redis.zadd(RETRY_KEY, {json.dumps({**delivery, "attempt": delivery["attempt"] + 1}):
                                                  started + delay})
        elif not outcome["ok"]:
            outcome["gave_up"] = True
        await self.jobs.record_delivery(job_id, outcome)

    async def _secret(self, owner: str | None) -> str | None:
        """A tenant's signing secret; the cluster's for a job submitted inside it."""
        if owner is None:
            return self.settings.webhook_secret
        with redis_errors(self.redis):
            return await read_webhook_secret(self.redis, owner)


def _poll_backoff_s(failed_polls: int) -> float:
    return min(POLL_BACKOFF_MAX_S, POLL_BACKOFF_S * 2 ** (failed_polls - 1))


def _first_delivery(entry: OutboxEntry) -> dict[str, Any]:
    """The first attempt at delivering an outbox entry; its id is the entry's, the same for every
    attempt, so that receivers can deduplicate."""
    return {"job": entry.job_id, "name": entry.name, "event": entry.event, "attempt": 1,
            "id": f"{entry.job_id}-{entry.id}"}


def run_dispatcher(settings: Settings) -> None:
    """`mmq webhooks`: a dispatcher on its own, until interrupted."""
    async def main() -> None:
        dispatcher = Dispatcher(settings)
        try:
            await dispatcher.run()
        finally:
            await dispatcher.close()

    asyncio.run(main())
