"""For operators: the health check (for load balancers) and Prometheus metrics. No key needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from ..operations import prometheus_metrics
from .dependencies import SharedGateway
from .error_responses import errors

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
def metrics(gateway: SharedGateway) -> Any:
    return PlainTextResponse(prometheus_metrics(gateway.redis),
                             media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/healthz", operation_id="health", summary="Redis reachable", responses=errors(503))
def health(gateway: SharedGateway) -> dict[str, bool]:
    return {"ok": gateway.transport.jobs.ping()}
