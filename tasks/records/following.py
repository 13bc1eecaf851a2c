"""Following a job's events until it ends: the decisions, shared by the sync and asyncio readers.

A reader starts with the queued event (not kept in the stream), reads the stream in blocking
reads, and stops at the job's end event, which the reads take from the record once the job has
ended (its stream expires soon after). A read soon after one that brought events goes straight to
the stream, a round trip saved on every wake: the stream was there a moment ago, and it outlives
the job's end, end event included, by `ENDED_STREAM_GRACE_MS`. A read that brings nothing makes it
ask the job's status, since a job that ended with its end event nowhere (it ended before records
kept it) would otherwise be followed forever. `JobStore.follow` and `AsyncJobStore.follow` only do
the reads.
"""

from __future__ import annotations

import time

from .layout import ENDED_STREAM_GRACE_MS, QUEUED_EVENT
from .model import Event, JobStatus, ends_job

# A read this soon after one that brought events skips the record (half the stream's grace: the
# stream cannot have expired in between, even with a reader that takes its time over the events).
FRESH_STREAM_S = ENDED_STREAM_GRACE_MS / 2000


class EventCursor:
    """Where a reader of one job's events stands, and whether it is done."""

    def __init__(self, after: str = "0", *, deadline: float | None = None) -> None:
        self.after = after  # the stream id of the last event read ("0": none yet)
        self.deadline = deadline  # time.monotonic() at which to stop, ended or not
        self.done = False
        self._read_at: float | None = None  # time.monotonic() of the last read that brought events

    @property
    def stream_fresh(self) -> bool:
        """The stream brought events a moment ago: the next read need not look in the record first."""
        return self._read_at is not None and time.monotonic() - self._read_at < FRESH_STREAM_S

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
        if batch:
            self._read_at = time.monotonic()
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
