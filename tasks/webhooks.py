"""Webhooks: which job events a job's URL receives, and how each delivery is signed.

Every event of a job has a name: `job.<status>` for the job, `step.<status>` for a step
(`step.progress` for its progress while running) and `item.<status>` for an item of a fan-out
step. A job's webhook names the events it wants (default: the job's end).

A delivery is a JSON POST signed like this (the receiver recomputes and compares):

    MMQ-Webhook-Timestamp: <unix seconds>
    MMQ-Webhook-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

Signing the timestamp with the body lets a receiver refuse replays older than a few minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import InvalidInput

JOB_EVENTS = tuple(f"job.{s}" for s in ("queued", "running", "succeeded", "failed", "cancelled"))
STEP_EVENTS = tuple(f"step.{s}" for s in ("queued", "running", "progress", "succeeded", "failed", "cancelled"))
ITEM_EVENTS = tuple(f"item.{s}" for s in ("running", "succeeded", "failed"))
EVENT_NAMES = (*JOB_EVENTS, *STEP_EVENTS, *ITEM_EVENTS)
ALL_EVENTS = "*"
DEFAULT_EVENTS = ("job.succeeded", "job.failed", "job.cancelled")

TIMESTAMP_HEADER = "MMQ-Webhook-Timestamp"
SIGNATURE_HEADER = "MMQ-Webhook-Signature"
DELIVERY_HEADER = "MMQ-Webhook-Id"
EVENT_HEADER = "MMQ-Webhook-Event"
SIGNATURE_TOLERANCE_S = 300


@dataclass(frozen=True)
class WebhookSpec:
    """Where a job's events go, and which of them."""

    url: str
    events: tuple[str, ...] = DEFAULT_EVENTS

    @classmethod
    def parse(cls, value: Any) -> WebhookSpec:
        """A webhook from its JSON form `{"url": ..., "events": [...]}` (or a bare URL), checked."""
        if isinstance(value, WebhookSpec):
            return value
        if isinstance(value, str):
            value = {"url": value}
        if not isinstance(value, Mapping):
            raise InvalidInput("webhook must be a URL or {url, events}", field="webhook")
        unknown = set(value) - {"url", "events"}
        if unknown:
            raise InvalidInput(f"webhook has unknown field {sorted(unknown)[0]!r}", field="webhook")
        url = value.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInput(f"webhook.url must be an http(s) URL, got {url!r}", field="webhook.url")
        events = value.get("events", DEFAULT_EVENTS)
        if isinstance(events, str) or not isinstance(events, Iterable):
            raise InvalidInput("webhook.events must be a list of event names", field="webhook.events")
        events = tuple(events)
        for name in events:
            if name != ALL_EVENTS and name not in EVENT_NAMES:
                raise InvalidInput(f"webhook.events: unknown event {name!r}; known: {', '.join(EVENT_NAMES)}"
                                   f" or {ALL_EVENTS!r}", field="webhook.events")
        if not events:
            raise InvalidInput("webhook.events is empty", field="webhook.events")
        return cls(url=url, events=events)

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "events": list(self.events)}

    def filter_string(self) -> str:
        """The form the job store matches event names against, in Redis."""
        return ALL_EVENTS if ALL_EVENTS in self.events else " ".join(self.events)


def event_name(event: Mapping[str, Any]) -> str:
    """`job.succeeded`, `step.progress`, `item.failed`: the name that webhooks filter on."""
    status = event["status"]
    if event["type"] == "job":
        return f"job.{status}"
    if "item" in event:
        return f"item.{status}"
    progress = event.get("progress")
    if status == "running" and progress and progress[0] > 0:
        return "step.progress"
    return f"step.{status}"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def signature_headers(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(secret: str, headers: Mapping[str, str], body: bytes, *,
           tolerance_s: int = SIGNATURE_TOLERANCE_S, now: float | None = None) -> bool:
    """True when `body` was signed with `secret` less than `tolerance_s` ago (receivers use this)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        timestamp = int(lowered[TIMESTAMP_HEADER.lower()])
        signature = lowered[SIGNATURE_HEADER.lower()]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
