"""`mmq metrics`: a small Prometheus exporter, for deployments that run no gateway."""

from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mmq.tasks.errors import ServiceUnavailable
from mmq.tasks.settings import Settings

from .operations import prometheus_metrics

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def serve_metrics(settings: Settings, *, host: str, port: int) -> None:
    redis = settings.redis.sync_client()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if self.path.split("?")[0] == "/metrics":
                try:
                    self._answer(200, prometheus_metrics(redis).encode(), CONTENT_TYPE)
                except ServiceUnavailable as exc:  # Redis away: say so, as the gateway's /metrics does
                    self._answer(503, f"{exc}\n".encode(), "text/plain")
            elif self.path == "/healthz":
                self._answer(200, b"ok\n", "text/plain")
            else:
                self._answer(404, b"not found: try /metrics\n", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug(fmt, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    print(f"mmq metrics on http://{host}:{server.server_port}/metrics", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
