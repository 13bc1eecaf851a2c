"""This worker process's heartbeat: loading, then ready (or failed), refreshed by a thread of its own.

The beat starts before the model loads, so a load of ten minutes shows as "loading, 600 s so far"
instead of as no worker at all; nothing the beat reads waits on the load (see `ModelPool.loaded`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from mmq.tasks import heartbeats
from mmq.tasks.heartbeats import Phase

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, redis: Any, hostname: str, facts: dict[str, Any]) -> None:
        self._redis = redis
        self._facts = {**facts, "hostname": hostname, "host": socket.gethostname()}
        self._live: Callable[[], dict[str, Any]] = dict  # facts of the moment (GPU memory, models)
        self._phase = Phase.LOADING
        self._since = time.time()
        self._error: str | None = None
        self._stop = threading.Event()

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
        self._stop.set()

    def _set(self, phase: Phase) -> None:
        self._phase, self._since = phase, time.time()
        self._beat()

    def _run(self) -> None:
        while not self._stop.wait(heartbeats.BEAT_TTL_S / 3):
            self._beat()

    def _beat(self) -> None:
        beat = {**self._facts, "phase": self._phase.value, "since": self._since}
        if self._error is not None:
            beat["error"] = self._error
        try:
            heartbeats.publish(self._redis, {**beat, **self._live()})
        except Exception:  # the broker may be restarting; the next beat tries again
            log.warning("heartbeat to Redis failed", exc_info=True)
