"""The HTTP gateway: jobs, uploads, events and the catalogue over HTTP, for apps in any language.

Every route but the catalogue, the health check and the job page needs an API key
(`Authorization: Bearer <key>`); a key's tenant sees only its own jobs, and another tenant's job
is answered exactly like a job that does not exist. The work itself is the direct client's: the
gateway authenticates, resolves file inputs, and presents records.

`create_app` only assembles: the shared `Gateway` (state.py), the routers (one module per family of
routes), the middleware, the error answers and the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from starlette.routing import BaseRoute

from mmq.tasks.settings import Settings

from . import catalogue_routes, job_routes, operation_routes, page_routes, static_routes, upload_routes
from .error_responses import add_error_handlers
from .middleware import AccessLog, BodyLimit
from .openapi import api_document
from .state import Gateway

DESCRIPTION = ("Submit jobs (one model task or a pipeline of them), follow them, fetch their artifacts. "
               "Errors are `{\"error\": {\"code\", \"message\", \"field\"}}` with a stable code.")
ROUTERS = (job_routes.router, job_routes.plans, upload_routes.router, catalogue_routes.router,
           operation_routes.router, page_routes.router, static_routes.router)


def create_app(settings: Settings | None = None, *, webhooks: bool = True) -> FastAPI:
    """The gateway app; with `webhooks`, it also runs a webhook dispatcher while it serves."""
    settings = settings or Settings.from_env()
    gateway = Gateway(settings)
    app = FastAPI(title="mmq gateway", version="1", description=DESCRIPTION,
                  lifespan=_lifespan(gateway, webhooks=webhooks))
    app.state.gateway = gateway
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(AccessLog)
    add_error_handlers(app)
    app.state.routes = [*app.routes, *(route for router in ROUTERS for route in router.routes)]
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = lambda: api_document(app)  # type: ignore[method-assign]
    return app


def api_routes(app: FastAPI) -> list[BaseRoute]:
    """Every route of the app: its own (the OpenAPI document, the docs pages) and its routers'. Recent
    FastAPI keeps an included router as a single entry of `app.routes`, so that no longer lists them."""
    return list(app.state.routes)


Lifespan = Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]


def _lifespan(gateway: Gateway, *, webhooks: bool) -> Lifespan:
    """While the app serves: the upload sweep, and (with `webhooks`) a webhook dispatcher."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop, task, dispatcher = asyncio.Event(), None, None
        if webhooks:
            from ..webhook_dispatcher import Dispatcher

            dispatcher = Dispatcher(gateway.settings)
            task = asyncio.create_task(dispatcher.run(stop))
        sweeper = asyncio.create_task(gateway.uploads.sweep_until(stop))
        yield
        stop.set()
        await sweeper
        if task is not None and dispatcher is not None:
            await asyncio.wait_for(task, timeout=gateway.settings.webhook_timeout_s + 5)
            await dispatcher.close()
        await gateway.aclose()

    return lifespan
