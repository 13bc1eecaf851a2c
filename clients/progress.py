"""Live progress of a job on a terminal: one line per step, redrawn as events arrive.

On a terminal the lines are redrawn in place; elsewhere (a log, a pipe) each change is one line.
While the job waits on a queue with no ready worker, a line says so ("waiting: no caption worker
is ready: <its last load error>"), checked every few seconds: events only come when something moves.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

BAR_WIDTH = 24
WAITING_CHECK_S = 3.0


def follow(job: Any, *, timeout_s: float | None = None, out: TextIO | None = None) -> None:
    """Print the job's progress until it ends (or `timeout_s` passes: JobTimeout)."""
    lines = _Lines(out or sys.stderr)
    with _watching_waits(job, lines):
        for event in job.events(timeout_s=timeout_s):
            line = _line(event)
            if line is not None:
                lines.show(event.get("step", "job"), line)


class _Lines:
    """The lines shown, one per key; the event loop and the waiting check both draw through it."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()
        self.lines: dict[str, str] = {}
        self.drawn = 0
        self.lock = threading.Lock()

    def show(self, key: str, line: str) -> None:
        with self.lock:
            if self.lines.get(key) == line:
                return
            self.lines[key] = line
            if not self.live:
                print(line, file=self.out, flush=True)
                return
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F")  # back to the first line drawn
            for text in self.lines.values():
                self.out.write(f"\x1b[2K{text}\n")
            self.out.flush()
            self.drawn = len(self.lines)


@contextmanager
def _watching_waits(job: Any, lines: _Lines) -> Iterator[None]:
    stop = threading.Event()

    def watch() -> None:
        said = None
        while not stop.wait(WAITING_CHECK_S):
            try:
                reason = job.waiting()
            except Exception:  # an unreachable broker shows in the event loop itself
                continue
            if reason != said and (reason or said):
                lines.show("waiting", f"waiting: {reason}" if reason else "waiting: a worker is ready now")
            said = reason

    watcher = threading.Thread(target=watch, name="mmq-waiting", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()


def _line(event: dict[str, Any]) -> str | None:
    if event["type"] == "job":
        return f"job: {event['status']}"
    if "item" in event:
        return None  # items show up in their step's progress
    done, total = event.get("progress") or (0, 0)
    return f"{event['step']:<14} {event['status']:<10} {bar(done, total)}"


def bar(done: int, total: int) -> str:
    if not total:
        return ""
    filled = round(BAR_WIDTH * done / total)
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}"
