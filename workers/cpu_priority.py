"""The model's thread first: a batching worker runs the work that feeds its model (each step's
thread: the record, the input's read, the wait on a prepare process, the outputs' write; and the
prepare processes themselves) at a lower CPU priority than the thread that runs the forward passes.

The feeding work has a whole forward pass to get the next batch ready; the forward pass has no
slack at all: every moment its thread waits for a core is a moment the model (a GPU, or here the
CPU) does nothing. On two cores, with B2's forward-dominated BLIP (a throwaway reading the model
thread's run-queue wait from /proc/thread-self/schedstat; 8 runs of 96 photos each way, in turns):
at one priority the model's thread waited for a core 70-140 ms of most batches of about 550 ms;
with the rest ten steps of niceness lower, 15-50 ms, and the worker captioned 28.6 images a
second against 24.6 (medians).

Niceness only ever goes up here (lower priority), which needs no privilege; it is per thread on
Linux, so a step's thread is lowered on Linux only (elsewhere `PRIO_PROCESS` with a thread id
names another process). 0 turns it off."""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

MAX_NICENESS = 19


def lower_this_process(increment: int) -> None:
    """Lower this whole process (a prepare process, at its start) by `increment` steps of niceness."""
    if increment <= 0:
        return
    try:
        os.nice(increment)
    except OSError as error:  # a sandbox that forbids it: prepare at the worker's priority
        log.warning("could not lower the prepare process's priority by %d: %s", increment, error)


def lower_this_thread(increment: int) -> None:
    """Lower the calling thread alone by `increment` steps of niceness (at most 19); nothing where a
    thread's own priority cannot be set (not Linux)."""
    if increment <= 0 or sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(MAX_NICENESS, current + increment))
    except OSError as error:  # a sandbox that forbids it: the step runs at the worker's priority
        log.warning("could not lower a step thread's priority by %d: %s", increment, error)


class LowersEachThreadOnce:
    """Lowers each thread that calls it, the first time it does (Celery's pool threads live on)."""

    def __init__(self, increment: int) -> None:
        self.increment = increment
        self._seen = threading.local()

    def __call__(self) -> None:
        if self.increment > 0 and not getattr(self._seen, "lowered", False):
            self._seen.lowered = True
            lower_this_thread(self.increment)
