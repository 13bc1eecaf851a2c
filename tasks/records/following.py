"""Following a job's events until it ends: the decisions, shared by the sync and asyncio readers.

A reader starts with the queued event (not kept in the stream), reads the stream in blocking
reads, and stops at the job's end event, which the reads take from the record once the job has
ended (its stream expires soon after); a read that brings nothing makes it ask the job's status, since
a job that ended with its end event nowhere (it ended before records kept it) would otherwise be
followed forever. `JobStore.follow` and `AsyncJobStore.follow` only do the reads.
"""

from __future__ import annotations

import time

from .layout import QUEUED_EVENT
from .model import Event, JobStatus, ends_job


class EventCursor:
    """Where a reader of one job's events stands, and whether it is done."""

    def __init__(self, after: str = "0", *, deadline: float | None = None) -> None:
        self.after = after  # the stream id of the last event read ("0": none yet)
        self.deadline = deadline  # time.monotonic() at which to stop, ended or not
        self.done = False

    def opening(self) -> list[Event]:
        """From the start, the queued event first: every job was queued, but no stream keeps it."""
        if self.after != "0":
            return []
        self.after = QUEUED_EVENT[0]
        return [QUEUED_EVENT]

    def block_ms(self, longest_ms: int) -> int:
        """How long the next read may wait: `longest_ms`, or less to end by the deadline."""
        if self.deadline is None:
            return longest_ms
        return max(1, min(longest_ms, int((self.deadline - time.monotonic()) * 1000)))

    def take(self, batch: list[Event]) -> list[Event]:
        """The events of one read up to the job's end (done then); done too once past the deadline."""
        taken: list[Event] = []
        for event_id, event in batch:
            taken.append((event_id, event))
            self.after = event_id
            if ends_job(event):
                self.done = True
                return taken
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.done = True
        return taken

    def idle(self, status: JobStatus) -> None:
        """The job's status after a read that brought nothing: an ended job has nothing more."""
        if status.terminal:
            self.done = True
