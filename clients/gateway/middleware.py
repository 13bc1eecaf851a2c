"""The gateway's ASGI middleware: an access log that never prints secrets, and a request body limit
that refuses an oversized body before reading it whole."""

from __future__ import annotations

import logging
import time
from typing import Any

from .error_responses import error_response

access_log = logging.getLogger("mmq.gateway.access")


class AccessLog:
    """One line per request: method, path, status, time. Never the query string (page tokens
    travel there) nor any header (API keys travel there); uvicorn's own access log is off."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.monotonic(), 0

        async def record(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            access_log.info("%s %s %d %.1fms", scope["method"], scope["path"], status,
                            (time.monotonic() - started) * 1000)


class BodyLimit:
    """Refuses a request body over `max_bytes` before reading it whole: at once when it says its
    length, else as soon as the bytes read pass the limit (413 either way). In the second case the
    app is told the client went away, and whatever it answers is dropped: the 413 was sent."""

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        seen, refused = 0, False

        async def limited() -> dict[str, Any]:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except Exception:
            if not refused:  # once refused, the app's complaint about the cut body is moot
                raise

    async def _refuse(self, send: Any) -> None:
        response = error_response(413, "payload_too_large", f"request body over the limit of {self.max_bytes} bytes "
                          "(MMQ_MAX_REQUEST_BYTES); upload files through POST /v1/uploads")
        # Connection: close, so that the server stops reading what the client still sends.
        await send({"type": "http.response.start", "status": 413,
                    "headers": [*response.raw_headers, (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": response.body})
