"""With the prefork pool, steps are taken only by a pool process whose model has loaded.

Each pool process loads its model in `worker_process_init`, before it tells the Celery parent it
is up. Left as Celery (5.7) has it, that goes wrong with real checkpoints in three ways: the parent
consumes a step while its first pool process still loads (a step held for minutes that another
worker could run); a respawned pool process (after a crash, a hard time limit, the OOM killer)
that takes longer than `worker_proc_alive_timeout` (4 s) to report is killed, again and again;
and an exception in the handler is only logged, so a process without a model takes every step.

Here each pool process reports over a pipe (loading, ready, failed) and:
- the parent consumes nothing until its first pool process is ready (a bootstep that runs before
  the consumer starts);
- no pool process is timed while it loads (`LOAD_WITHOUT_LIMIT_S`);
- a failed load makes the parent shut down, which returns what it had taken to the queue (kombu
  restores unacknowledged messages when its channel closes), and exit `EXIT_LOAD_FAILED`, so that
  its supervisor or orchestrator restarts it with backoff. The failed pool process exits at once,
  taking nothing; one respawned in the meantime sees the shared flag and exits too.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import select
from collections.abc import Callable
from typing import Any, TypeVar

from celery import bootsteps
from celery.exceptions import WorkerShutdown, WorkerTerminate
from celery.worker import state as worker_state

from mmq.tasks.errors import ModelLoadFailed
from mmq.tasks.heartbeats import EXIT_LOAD_FAILED, Phase

log = logging.getLogger(__name__)
LOAD_WITHOUT_LIMIT_S = 365 * 24 * 3600.0  # Celery's worker_proc_alive_timeout: never, in practice
_MAX_REPORT_BYTES = 3500  # one os.write below PIPE_BUF (4096) is atomic: reports never interleave

Runner = TypeVar("Runner")


class LoadReports:
    """A pipe from the pool processes to the Celery parent, and a flag they share: a load failed."""

    def __init__(self) -> None:
        self.fileno, self._write = os.pipe()
        os.set_blocking(self.fileno, False)
        self._failed = mmap.mmap(-1, 1)  # anonymous and shared: forked pool processes see one byte
        self._pending = b""

    @property
    def failed_before(self) -> bool:
        return self._failed[0] == 1

    def tell(self, phase: Phase, detail: str = "") -> None:
        """In a pool process: say where its load stands."""
        if phase is Phase.FAILED:
            self._failed[0] = 1
        report = {"phase": phase.value, "pid": os.getpid(), "detail": detail[:_MAX_REPORT_BYTES // 2]}
        os.write(self._write, json.dumps(report).encode() + b"\n")

    def read(self) -> list[dict[str, Any]]:
        """In the parent: the reports that have arrived, without waiting."""
        try:
            self._pending += os.read(self.fileno, 65536)
        except BlockingIOError:
            pass
        *lines, self._pending = self._pending.split(b"\n")
        return [json.loads(line) for line in lines if line]

    def wait(self, timeout_s: float) -> list[dict[str, Any]]:
        select.select([self.fileno], [], [], timeout_s)
        return self.read()


def load_in_pool_process(reports: LoadReports, load: Callable[[], Runner]) -> Runner:
    """Run in `worker_process_init`: load, report, and leave the process at once if it failed."""
    if reports.failed_before:
        os._exit(EXIT_LOAD_FAILED)  # the parent is shutting down: loading again would only delay it
    reports.tell(Phase.LOADING)
    try:
        runner = load()
    except ModelLoadFailed as exc:  # already logged in one line, and said in the heartbeat
        reports.tell(Phase.FAILED, str(exc))
        os._exit(EXIT_LOAD_FAILED)
    reports.tell(Phase.READY)
    return runner


def gate_step(reports: LoadReports, announce_failure: Callable[[str], None]) -> type[bootsteps.StartStopStep]:
    """The worker bootstep that holds the consumer back until the first pool process is ready, and
    stops the worker when any pool process fails to load: by saying so, or by dying while it loads
    (the kernel's OOM killer, a segfault), which the parent then announces with `announce_failure`."""

    class AwaitModel(bootsteps.StartStopStep):
        label = "mmq-load-gate"
        requires = ("celery.worker.components:Pool",)  # the consumer step comes last, after this

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.loading: set[int] = set()  # pool processes that said they are loading

        def start(self, worker: Any) -> None:
            log.info("the pool process is loading the model; steps are taken once it is ready")
            while True:
                if worker_state.should_stop is not None or worker_state.should_terminate is not None:
                    raise WorkerTerminate(0)  # nothing taken yet: nothing to let finish
                outcome = self._follow(reports.wait(0.5))
                if outcome is Phase.READY:
                    return
                if outcome is Phase.FAILED:
                    worker.exitcode = EXIT_LOAD_FAILED
                    raise WorkerShutdown(EXIT_LOAD_FAILED)

        def register_with_event_loop(self, worker: Any, hub: Any) -> None:
            hub.add_reader(reports.fileno, self._check, worker, True)
            hub.call_repeatedly(1.0, self._check, worker, False)

        def _check(self, worker: Any, readable: bool) -> None:
            if self._follow(reports.read() if readable else []) is Phase.FAILED:
                worker.exitcode = EXIT_LOAD_FAILED
                # A cold shutdown: no step runs, and the one this worker holds goes back to its
                # queue when the consumer's channel closes.
                worker_state.should_terminate = EXIT_LOAD_FAILED

        def _follow(self, arrived: list[dict[str, Any]]) -> Phase | None:
            """Take in the reports; FAILED when a load failed, READY when one finished."""
            outcome = None
            for report in arrived:
                pid, phase = report["pid"], Phase(report["phase"])
                if phase is Phase.LOADING:
                    self.loading.add(pid)
                    log.info("pool process %s is loading the model (no step reaches it until it is ready)", pid)
                elif phase is Phase.READY:
                    self.loading.discard(pid)
                    outcome = outcome or Phase.READY
                else:
                    log.error("pool process %s could not load the model; stopping the worker", pid)
                    return Phase.FAILED
            for pid in [pid for pid in self.loading if not _running(pid)]:
                reason = (f"the pool process (pid {pid}) died while loading the model: killed by a signal "
                          f"(the kernel's OOM killer?) or crashed; see the system log")
                log.error("%s; stopping the worker", reason)
                announce_failure(reason)
                return Phase.FAILED
            return outcome

    return AwaitModel


def _running(pid: int) -> bool:
    """Alive and not a zombie (Celery's pool reaps its processes, but not at once)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
