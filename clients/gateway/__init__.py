"""The HTTP gateway (`mmq gateway`): FastAPI, served by uvicorn. Needs the `gateway` extra."""

from __future__ import annotations

import logging

from mmq.tasks.settings import Settings


def serve(settings: Settings | None = None, *, host: str | None = None, port: int | None = None,
          webhooks: bool = True) -> None:
    """Serve the gateway until interrupted (SIGTERM and SIGINT stop it gracefully)."""
    import uvicorn

    from .app import create_app

    settings = settings or Settings.from_env()
    app = create_app(settings, webhooks=webhooks)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn's access log prints query strings, where job page tokens travel: ours does not.
    uvicorn.run(app, host=host or settings.gateway_host, port=port or settings.gateway_port,
                log_level="info", access_log=False, proxy_headers=True, timeout_graceful_shutdown=10)
