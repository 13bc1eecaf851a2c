"""This worker process's heartbeat: loading, then ready (or failed), refreshed by a thread of its own.

The beat starts before the model loads, so a load of ten minutes shows as "loading, 600 s so far"
instead of as no worker at all; nothing the beat reads waits on the load (see `ModelPool.loaded`).
While Redis is away the beats go on failing quietly: one line when the outage starts, one when a
beat gets through again.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from mmq.tasks import heartbeats
from mmq.tasks.errors import ServiceUnavailable
from mmq.tasks.heartbeats import Phase
from mmq.tasks.outages import Outage

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, redis: Any, hostname: str, facts: dict[str, Any], *,
                 interval_s: float = heartbeats.BEAT_TTL_S / 3) -> None:
        self._redis = redis
        self._interval_s = interval_s
        self._facts = {**facts, "hostname": hostname, "host": socket.gethostname()}
        self._live: Callable[[], dict[str, Any]] = dict  # facts of the moment (GPU memory, models)
        self._phase = Phase.LOADING
        self._since = time.time()
        self._error: str | None = None
        self._stop = threading.Event()
        self._outage = Outage(log, "heartbeat")

    def start(self) -> None:
        self._beat()
        threading.Thread(target=self._run, name="mmq-heartbeat", daemon=True).start()

    def ready(self, live: Callable[[], dict[str, Any]], **facts: Any) -> None:
        self._facts.update(facts)
        self._live = live
        self._set(Phase.READY)

    def failed(self, error: str) -> None:
        """Said at once (the process exits right after): in the beat and as its specialisation's
        last load error."""
        self._error = error
        self._set(Phase.FAILED)
        self.stop()

    def stop(self) -> None:
        """No more beats: the last one expires within `BEAT_TTL_S`."""
        self._stop.set()

    def _set(self, phase: Phase) -> None:
        self._phase, self._since = phase, time.time()
        self._beat()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._beat()

    def _beat(self) -> None:
        beat = {**self._facts, "phase": self._phase.value, "since": self._since}
        if self._error is not None:
            beat["error"] = self._error
        try:
            heartbeats.publish(self._redis, {**beat, **self._live()})
        except ServiceUnavailable as exc:  # Redis restarting, say: said once; the next beat tries again
            self._outage.began(exc)
        except Exception:  # a surprise: its traceback each time
            log.warning("heartbeat to Redis failed", exc_info=True)
        else:
            self._outage.ended()
