"""An outage as a loop that runs in the background sees it: one log line when a service it needs
becomes unreachable, one when it answers again, and nothing in between.

The webhook dispatcher polls Redis every second and a worker's heartbeat writes to it every ten:
logging each failed call (with its traceback) while Redis restarts would bury the one line that
matters under hundreds. The loop keeps trying; `Outage` decides what is worth saying.

    outage = Outage(log, "webhook dispatcher")
    try:
        poll()
    except ServiceUnavailable as exc:
        outage.began(exc)      # "webhook dispatcher: Redis unreachable at 127.0.0.1:6379: ...", once
    else:
        outage.ended()         # "webhook dispatcher: redis answers again (unreachable for 12 s)", once
"""

from __future__ import annotations

import logging
import threading
import time

from .errors import ServiceUnavailable


class Outage:
    """Whether the service a background loop needs is away now; says so once when it goes, once
    when it is back. Safe to share between threads (or tasks) of one loop."""

    def __init__(self, log: logging.Logger, who: str) -> None:
        self._log = log
        self._who = who  # what is affected, first in each line: "webhook dispatcher", "heartbeat"
        self._lock = threading.Lock()
        self._since: float | None = None  # monotonic time the outage began; None while all is well
        self._service = ""

    def began(self, error: ServiceUnavailable) -> bool:
        """Note that `error` (translated: it names the service and its address) happened; True, and
        a warning, when this starts an outage, False while one is already under way."""
        with self._lock:
            if self._since is not None:
                return False
            self._since, self._service = time.monotonic(), error.service
        self._log.warning("%s: %s; trying again until it answers", self._who, error)
        return True

    def ended(self) -> bool:
        """Note that a call succeeded; True, and one line, when that ends an outage."""
        with self._lock:
            if self._since is None:
                return False
            lasted_s, self._since = time.monotonic() - self._since, None
        self._log.info("%s: %s answers again (unreachable for %.0f s)", self._who, self._service, lasted_s)
        return True
