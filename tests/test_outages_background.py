"""Background loops through a Redis outage: the webhook dispatcher (polls every second) and a
worker's heartbeat (beats every few seconds) go on trying, and log one line when the outage starts
(naming Redis's address) and one when it ends, with no traceback.

Real: a redis-server stopped (SIGTERM) and restarted on the same port from its append-only file,
the dispatcher delivering to a local HTTP receiver, the heartbeat writing its beats. Faked: nothing
(the heartbeat beats every tenth of a second instead of every ten, to see many beats fail).
"""

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mmq.clients.servers import start_redis, stop
from mmq.clients.webhook_dispatcher import Dispatcher
from mmq.tasks import Settings, heartbeats
from mmq.workers.heartbeat import Heartbeat
from tests.test_webhooks import Receiver, wait_for

QUEUED_HOOK = ["job.queued"]  # no worker runs here: the job's first event is the one delivered


def restart_redis(stack, tmp_path: Path, *, down_s: float) -> str:
    """Stop the stack's Redis, leave it down `down_s`, start it again on its port; its address."""
    folder = next(p for p in tmp_path.iterdir() if p.name.startswith("redis-"))
    stop(stack.redis.pid)  # SIGTERM: Redis writes its append-only file and exits
    time.sleep(down_s)  # the outage: the loops keep trying meanwhile
    stack.redis = start_redis(folder, port=stack.redis.port, persistent=True, tied=True)
    return f"127.0.0.1:{stack.redis.port}"


def dispatching(settings: Settings) -> Callable[[], None]:
    """A dispatcher on an event loop of its own, in a thread, as in a gateway; a function that stops it."""
    started, running = threading.Event(), {}

    async def main() -> None:
        dispatcher, stop_event = Dispatcher(settings), asyncio.Event()
        running.update(loop=asyncio.get_running_loop(), stop=stop_event)
        started.set()
        try:
            await dispatcher.run(stop_event)
        finally:
            await dispatcher.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="dispatcher")
    thread.start()
    assert started.wait(30)

    def halt() -> None:
        running["loop"].call_soon_threadsafe(running["stop"].set)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the dispatcher did not stop"

    return halt


def messages(caplog: pytest.LogCaptureFixture, logger: str, *, containing: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and containing in r.getMessage()]


def test_the_webhook_dispatcher_says_an_outage_once_and_its_end_once_then_delivers_again(
        make_stack, tmp_path, caplog):
    logger = "mmq.clients.webhook_dispatcher"
    stack = make_stack(MMQ_WEBHOOK_SECRET="outage-secret")
    receiver = Receiver(fail_first=0)
    with caplog.at_level(logging.INFO, logger=logger):
        halt = dispatching(stack.settings)
        try:
            with stack.client() as client:  # given a dispatcher that delivers
                client.submit("text2image", prompt="before", webhook={"url": receiver.url, "events": QUEUED_HOOK})
            wait_for(lambda: len(receiver.received) == 1)
            # when Redis is away long enough for several polls to fail, backing off up to 5 s
            address = restart_redis(stack, tmp_path, down_s=8)
            wait_for(lambda: messages(caplog, logger, containing="answers again"))
            with stack.client() as client:
                client.submit("text2image", prompt="after", webhook={"url": receiver.url, "events": QUEUED_HOOK})
            wait_for(lambda: len(receiver.received) == 2)  # then it delivers again
        finally:
            halt()
            receiver.server.shutdown()

    records = [r for r in caplog.records if r.name == logger]
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and f"Redis unreachable at {address}" in warnings[0], warnings
    assert warnings[0].startswith("webhook dispatcher: ")
    assert messages(caplog, logger, containing="redis answers again (unreachable for ") == [
        next(r.getMessage() for r in records if "answers again" in r.getMessage())]
    assert not [r for r in records if r.exc_info], "a traceback was logged for the outage"
    assert [json.loads(body)["type"] for _, _, body in receiver.received] == ["job.queued", "job.queued"]


def test_heartbeats_say_an_outage_once_and_its_end_once(make_stack, tmp_path, caplog):
    logger = "mmq.workers.heartbeat"
    stack = make_stack()
    beat = Heartbeat(stack.redis_client(), "outage-test", {"specialisation": "caption", "model": "tiny"},
                     interval_s=0.1)
    with caplog.at_level(logging.INFO, logger=logger):
        beat.start()
        try:
            address = restart_redis(stack, tmp_path, down_s=2)  # about twenty beats fail meanwhile
            restarted = time.time()
            wait_for(lambda: messages(caplog, logger, containing="answers again"))
            redis = stack.redis_client()
            wait_for(lambda: json.loads(redis.get(heartbeats.beat_key("outage-test")))["beat_at"] > restarted)
        finally:
            beat.stop()

    records = [r for r in caplog.records if r.name == logger]
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"heartbeat: Redis unreachable at {address}"), warnings
    assert len(messages(caplog, logger, containing="answers again")) == 1
    assert not [r for r in records if r.exc_info], "a traceback was logged for the outage"
