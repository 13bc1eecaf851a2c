"""`python -m mmq.workers SPECIALISATION [--gpus 0,1]`: one pinned Celery worker process per GPU.

With several GPUs this process supervises one child per GPU, each started with
CUDA_VISIBLE_DEVICES set to its GPU, and forwards SIGTERM/SIGINT to them. With one GPU (or none)
it becomes the Celery worker itself: prefork pool, concurrency 1, only its specialisation's queue.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

from mmq.tasks.errors import MMQError
from mmq.tasks.settings import Settings
from mmq.tasks.specialisations import SPECIALISATIONS, worker_name


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    gpus = _parse_gpus(args.gpus)
    try:
        if len(gpus) > 1:
            return _supervise(args.specialisation, gpus, args.loglevel)
        return _serve(args.specialisation, gpus[0] if gpus else None, args.loglevel)
    except MMQError as exc:
        print(f"mmq worker: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmq worker", description=__doc__.splitlines()[0])
    parser.add_argument("specialisation", choices=sorted(SPECIALISATIONS))
    parser.add_argument("--gpus", default="", help="comma-separated GPU indices, e.g. 0,1 (default: CPU)")
    parser.add_argument("--loglevel", default="INFO")
    return parser


def _parse_gpus(raw: str) -> list[str]:
    gpus = [g.strip() for g in raw.split(",") if g.strip()]
    for gpu in gpus:
        if not gpu.isdigit():
            raise SystemExit(f"mmq worker: --gpus takes GPU indices like 0,1 but got {gpu!r}")
    return gpus


def _serve(specialisation: str, gpu: str | None, loglevel: str) -> int:
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before anything could initialise CUDA
    logging.basicConfig(level=loglevel, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    from .app import build_worker_app

    hostname = worker_name(specialisation, gpu, os.getpid(), socket.gethostname())
    app = build_worker_app(Settings.from_env(), specialisation, hostname=hostname)
    app.worker_main([
        "worker", "--queues", specialisation, "--concurrency", "1", "--pool", "prefork",
        "--hostname", hostname, "--loglevel", loglevel, "--task-events", "--without-gossip",
        "--without-mingle",
    ])
    return 0


def _supervise(specialisation: str, gpus: list[str], loglevel: str) -> int:
    children = [
        subprocess.Popen([sys.executable, "-m", "mmq.workers", specialisation, "--gpus", gpu,
                          "--loglevel", loglevel])
        for gpu in gpus
    ]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(child.wait() for child in children)
