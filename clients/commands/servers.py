"""The commands that serve until stopped: `mmq gateway`, `metrics` and `webhooks`."""

from __future__ import annotations

import argparse

from .common import Commands, SharedOptions


def add_gateway(commands: Commands, shared: SharedOptions) -> None:
    gateway = commands.add_parser("gateway", help="serve the HTTP gateway (and deliver webhooks)",
                                  parents=[shared.data_dir])
    gateway.add_argument("--host", default=None, help="default MMQ_GATEWAY_HOST or 127.0.0.1")
    gateway.add_argument("--port", type=int, default=None, help="default MMQ_GATEWAY_PORT or 8600")
    gateway.add_argument("--no-webhooks", action="store_true", help="leave webhooks to `mmq webhooks`")
    gateway.set_defaults(handler=_gateway)


def add_metrics(commands: Commands, shared: SharedOptions) -> None:
    metrics = commands.add_parser("metrics", help="serve Prometheus metrics (for deployments without a gateway)",
                                  parents=[shared.data_dir])
    metrics.add_argument("--host", default="0.0.0.0")
    metrics.add_argument("--port", type=int, default=9600)
    metrics.set_defaults(handler=_metrics)


def add_webhooks(commands: Commands, shared: SharedOptions) -> None:
    webhooks = commands.add_parser("webhooks", help="deliver webhooks (without serving the gateway)",
                                   parents=[shared.data_dir])
    webhooks.set_defaults(handler=_webhooks)


def _gateway(args: argparse.Namespace) -> int:
    from ..gateway import serve

    serve(host=args.host, port=args.port, webhooks=not args.no_webhooks)
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from mmq.tasks.settings import Settings

    from ..exporter import serve_metrics

    serve_metrics(Settings.from_env(), host=args.host, port=args.port)
    return 0


def _webhooks(args: argparse.Namespace) -> int:
    from mmq.tasks.settings import Settings

    from ..webhook_dispatcher import run_dispatcher

    run_dispatcher(Settings.from_env())
    return 0
