"""The lost-message sweep (`mmq.tasks.lost_jobs`), run by every worker's Celery parent in a thread
of its own, every `MMQ_RESTORE_INTERVAL_S` (when kombu's own restore sweep runs too). The sweeps
of all workers take turns through a lock in Redis: one runs per interval across the cluster.

Its own thread, not Celery's timer: a sweep pauses (`CONFIRM_GAP_S`) and reads Redis, and the
timer also releases the steps retried with a countdown.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery

from mmq.tasks.errors import ServiceUnavailable
from mmq.tasks.lost_jobs import LostJobSweep
from mmq.tasks.outages import Outage
from mmq.tasks.settings import Settings

log = logging.getLogger(__name__)


class LostJobSweeper:
    def __init__(self, app: Celery, settings: Settings) -> None:
        self._interval_s = settings.restore_interval_s
        self._sweep = LostJobSweep(app, settings.redis.sync_client(),
                                   visibility_timeout_s=settings.visibility_timeout_s,
                                   interval_s=settings.restore_interval_s)
        self._stop = threading.Event()
        self._outage = Outage(log, "lost-job sweep")

    def start(self) -> None:
        if not self._sweep.enabled:
            log.info("lost-job sweep off: the broker's transport options change where kombu keeps messages")
            return
        threading.Thread(target=self._run, name="mmq-lost-job-sweep", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._sweep.run()
            except ServiceUnavailable as exc:  # Redis restarting, say: once; the next sweep tries again
                self._outage.began(exc)
            except Exception:  # a surprise: its traceback each time, and the worker goes on
                log.warning("lost-job sweep failed", exc_info=True)
            else:
                self._outage.ended()
