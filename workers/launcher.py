"""`python -m mmq.workers SPECIALISATION [--gpus 0,1]`: one pinned Celery worker process per GPU.

With several GPUs this process supervises one child per GPU, each started with
CUDA_VISIBLE_DEVICES set to its GPU: it restarts a child that dies (with backoff), and on
SIGTERM/SIGINT stops them all and waits for them. With one GPU (or none) it becomes the Celery
worker itself: prefork pool, concurrency 1, only its specialisation's queue.

SIGTERM is a bounded graceful shutdown: the running step may finish within
MMQ_SHUTDOWN_TIMEOUT_S; past that it is cancelled and, unacknowledged, goes back to its queue.
A worker whose model cannot load exits EXIT_LOAD_FAILED (4) having acknowledged nothing; the
supervisor restarts such a child with backoff, as an orchestrator restarts a container.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from mmq.tasks.errors import MMQError, ModelLoadFailed
from mmq.tasks.heartbeats import EXIT_LOAD_FAILED
from mmq.tasks.processes import die_with_parent
from mmq.tasks.settings import Settings
from mmq.tasks.specialisation_specs import SPECIALISATIONS, worker_name

log = logging.getLogger("mmq.workers.supervisor")
IN_FLIGHT_BATCHES = 2  # a batching worker's steps in flight, in batches: one running, one getting ready


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    gpus = _parse_gpus(args.gpus)
    try:
        if len(gpus) > 1:
            logging.basicConfig(level=args.loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            return _supervise(args.specialisation, gpus, args.loglevel)
        return _serve(args.specialisation, gpus[0] if gpus else None, args.loglevel)
    except MMQError as exc:
        print(f"mmq worker: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmq worker", description=__doc__.splitlines()[0])
    parser.add_argument("specialisation", choices=sorted(SPECIALISATIONS))
    parser.add_argument("--gpus", default="", help="comma-separated GPU indices, e.g. 0,1, counted within an "
                        "inherited CUDA_VISIBLE_DEVICES (default: the only visible GPU, else the CPU)")
    parser.add_argument("--loglevel", default="INFO")
    return parser


def _parse_gpus(raw: str) -> list[str]:
    gpus = [g.strip() for g in raw.split(",") if g.strip()]
    for gpu in gpus:
        if not gpu.isdigit():
            raise SystemExit(f"mmq worker: --gpus takes GPU indices like 0,1 but got {gpu!r}")
        physical_gpu(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))  # out of range: said now, not per child
    return gpus


def physical_gpu(index: str, inherited: str | None) -> str:
    """What CUDA_VISIBLE_DEVICES must name for `--gpus index`: the index itself, or, under an
    inherited allocation (a scheduler's CUDA_VISIBLE_DEVICES=4,5), its entry there (`--gpus 1`
    is 5): a worker never escapes the GPUs it was given."""
    if inherited is None:
        return index
    allowed = [item.strip() for item in inherited.split(",") if item.strip()]
    if int(index) >= len(allowed):
        raise SystemExit(f"mmq worker: --gpus {index}, but this process may use only {len(allowed)} GPU(s): "
                         f"CUDA_VISIBLE_DEVICES={inherited} (--gpus counts within it, from 0)")
    return allowed[int(index)]


def prepare_cuda_environment(gpu: str | None) -> None:
    """What CUDA must be told before anything in this process (or a pool process forked from it)
    could initialise it. CUDA's own order is fastest first; nvidia-smi's, which people and
    `mmq plan` read, is the PCI bus's. `torch.cuda.is_available()` asks the CUDA runtime, which
    makes every process forked afterwards unable to use CUDA, unless told to ask NVML instead
    (any library may ask at import)."""
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = physical_gpu(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))
        os.environ["MMQ_PINNED_GPU"] = gpu  # the device: this GPU (see devices.pick_device)


def _serve(specialisation: str, gpu: str | None, loglevel: str) -> int:
    prepare_cuda_environment(gpu)
    logging.basicConfig(level=loglevel, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    from celery.signals import worker_init, worker_ready

    from .app import build_worker_app, uses_threads
    from .lost_job_sweeper import LostJobSweeper

    settings = Settings.from_env()
    hostname = worker_name(specialisation, gpu, os.getpid(), socket.gethostname())
    try:
        app = build_worker_app(settings, specialisation, hostname=hostname)
    except ModelLoadFailed:  # (batching) said in one line already, in the log and the heartbeat
        return EXIT_LOAD_FAILED
    # Batching: one thread per step in flight (the prefetch is the concurrency), twice the batch
    # size: one batch on the model while the next one's steps are fetched, read and decoded;
    # otherwise one forked pool process, one step at a time.
    threads = IN_FLIGHT_BATCHES * settings.serving_for(specialisation).max_batch
    pool = (["--pool", "threads", "--concurrency", str(threads)]
            if uses_threads(settings, specialisation) else ["--pool", "prefork", "--concurrency", "1"])
    started: list[Any] = []  # the WorkController, whose exit status `worker_main` does not return
    worker_init.connect(lambda sender=None, **_: started.append(sender), weak=False)
    # Jobs whose next step's message a Redis failover or restart lost, queued again.
    sweeper = LostJobSweeper(app, settings)
    worker_ready.connect(lambda sender=None, **_: sweeper.start(), weak=False)
    app.worker_main([
        "worker", "--queues", specialisation, *pool, "--hostname", hostname, "--loglevel", loglevel,
        "--task-events", "--without-gossip", "--without-mingle",
    ])
    status = started[0].exitcode if started else None
    return status if isinstance(status, int) else 0  # EXIT_LOAD_FAILED, for one


def _supervise(specialisation: str, gpus: list[str], loglevel: str) -> int:
    return Supervisor(specialisation, gpus, loglevel).run()


class Supervisor:
    """One child worker per GPU, restarted when it dies, all stopped together."""

    POLL_S = 0.5
    MAX_BACKOFF_S = 30.0
    STABLE_S = 60.0  # a child that ran this long before dying is restarted at once again

    def __init__(self, specialisation: str, gpus: list[str], loglevel: str) -> None:
        self.specialisation = specialisation
        self.gpus = gpus
        self.loglevel = loglevel
        self.children: dict[str, subprocess.Popen] = {}
        self.started_at: dict[str, float] = {}
        self.backoff: dict[str, float] = {gpu: 1.0 for gpu in gpus}
        self.restart_at: dict[str, float] = {}
        self.stopping: int | None = None  # the signal that asked us to stop

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for gpu in self.gpus:
            self._start(gpu)
        while self.stopping is None:
            time.sleep(self.POLL_S)
            for gpu, child in list(self.children.items()):
                if child.poll() is not None and self.stopping is None:
                    self._schedule_restart(gpu, child.returncode)
            for gpu, when in list(self.restart_at.items()):
                if time.monotonic() >= when and self.stopping is None:
                    del self.restart_at[gpu]
                    self._start(gpu)
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(self.stopping)
        return max((child.wait() for child in self.children.values()), default=0)

    def _start(self, gpu: str) -> None:
        # Each child in a session of its own: a signal to our process group (a terminal's Ctrl+C)
        # reaches it once, forwarded by us, not twice (the second would cut its graceful shutdown
        # short). If we die, it is told to stop.
        self.children[gpu] = subprocess.Popen([sys.executable, "-m", "mmq.workers", self.specialisation,
                                               "--gpus", gpu, "--loglevel", self.loglevel],
                                              start_new_session=True, preexec_fn=die_with_parent)
        self.started_at[gpu] = time.monotonic()
        log.info("supervisor: %s worker on GPU %s started (pid %d)", self.specialisation, gpu,
                 self.children[gpu].pid)

    def _schedule_restart(self, gpu: str, returncode: int) -> None:
        if gpu in self.restart_at:
            return
        if time.monotonic() - self.started_at[gpu] >= self.STABLE_S:
            self.backoff[gpu] = 1.0
        delay = self.backoff[gpu]
        self.backoff[gpu] = min(delay * 2, self.MAX_BACKOFF_S)
        self.restart_at[gpu] = time.monotonic() + delay
        why = "could not load its model" if returncode == EXIT_LOAD_FAILED else f"exited with {returncode}"
        log.warning("supervisor: %s worker on GPU %s %s; restarting in %.0f s", self.specialisation, gpu, why, delay)

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = signum
