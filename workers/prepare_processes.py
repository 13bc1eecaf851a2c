"""Prepare processes: a batching worker's `prepare` (read, decode, process one job's inputs) in
processes of its own, beside the model's.

A batching worker prepares each step in the step's own thread while the model runs the batch
before, but its threads share one interpreter lock: decoding and processing images (Python between
the C calls) and the model's generate loop (Python between the kernels) take turns at it, and a
worker uses little more than one core however many it has. Prepare processes take that work off
the lock, as a data loader's worker processes do for training: each is started with the
specialisation's `Preparer` (its processor, never the weights), gets one job's inputs at a time
(artifacts already read: the bytes go, not a way to the store) and sends back the prepared value,
its arrays through memory it shares with the worker (`mmq.workers.shared_replies`).

What can go wrong stays with one step: a bad input's `InvalidInput` comes back and fails its step
alone, as in the worker's own process; a process that dies while preparing (a decoder that crashes,
the kernel's out-of-memory killer) fails only the step it was preparing, with an error that says so,
and is replaced. The processes start at the first batch of more than one step (a worker that sees
one job at a time never pays for them); until one is up, and if none can be, steps prepare in their
own threads as before.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
from collections.abc import Mapping
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any

from mmq.tasks.errors import MMQError
from mmq.tasks.processes import die_with_parent

from .shared_replies import SHARED_BYTES, SharedReplies
from .specialisation_base import Prepared, Preparer, Specialisation

log = logging.getLogger(__name__)
_START = multiprocessing.get_context("spawn")  # never fork: the worker runs threads (Celery's, ours)
_WAIT_FOR_IDLE_S = 0.5  # how often a step waiting for a free process checks that one is still up


class PrepareProcessDied(MMQError):
    """The process preparing a step's inputs died before it answered."""


class PrepareProcesses:
    """`count` processes running one `Preparer`, each preparing one job at a time."""

    def __init__(self, preparer: Preparer, count: int, *, name: str, nice: int = 0) -> None:
        self.preparer, self.count, self.name = preparer, count, name
        self.nice = nice  # steps of niceness below the worker (mmq.workers.cpu_priority)
        self._idle: queue.Queue[_Process] = queue.Queue()
        self._lock = threading.Lock()
        self._up = 0  # processes set up and serving (idle or preparing)
        self._started = False
        self._closed = False
        self._processes: list[_Process] = []
        self._wanted: queue.Queue[bool | None] = queue.Queue()  # a process to start; None: stop starting

    @property
    def up(self) -> int:
        return self._up

    def start(self) -> None:
        """Start the processes in the background (once); `prepare` uses them as they come up."""
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
        for _ in range(self.count):
            self._bring_up()
        threading.Thread(target=self._start_processes, name=f"{self.name}-prepare-starter", daemon=True).start()

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> tuple[bool, Prepared]:
        """(True, prepared) from a process; (False, None) when none is up: prepare here instead.
        Raises what the preparer raised, or `PrepareProcessDied` if the process died meanwhile."""
        process = self._take()
        if process is None:
            return False, None
        try:
            request = pickle.dumps((task, inputs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # an input that cannot travel is prepared here
            self._idle.put(process)
            log.debug("%s: inputs of a %s step could not be pickled; preparing it here", self.name, task, exc_info=True)
            return False, None
        try:
            process.connection.send_bytes(request)
            reply = process.connection.recv_bytes()
        except (EOFError, OSError) as lost:
            how = process.ended()
            self._lost(process, how)
            if self._closed:  # stopped under it (its model unloaded, the worker stopping): prepare here
                return False, None
            raise PrepareProcessDied(f"{task}: the process preparing this step's inputs died ({how}) before it "
                                     f"answered; only this step failed ({type(lost).__name__})") from None
        try:
            pickled, buffers = process.take(reply)  # out of its shared memory before its next job
        except ValueError:  # its memory closed under it: stopped meanwhile (the model unloaded)
            return False, None  # prepared here
        finally:
            self._idle.put(process)
        try:
            kind, value = pickle.loads(pickled, buffers=buffers)
        except Exception as error:  # noqa: BLE001 - e.g. an exception class that cannot be rebuilt here
            raise MMQError(f"{task}: the prepare process's answer could not be read: {type(error).__name__}: "
                           f"{error}") from None
        if kind == "error":
            raise value
        return True, value

    def close(self) -> None:
        """Ask every process to stop, and end the ones that do not."""
        with self._lock:
            self._closed, self._up = True, 0  # from now on, steps prepare in their own threads
            processes, self._processes = self._processes, []
        self._wanted.put(None)
        for process in processes:
            process.stop()

    def _take(self) -> _Process | None:
        while self._up:
            try:
                return self._idle.get(timeout=_WAIT_FOR_IDLE_S)
            except queue.Empty:
                continue
        return None

    def _bring_up(self) -> None:
        self._wanted.put(True)

    def _start_processes(self) -> None:
        # One thread starts every process and lives as long as they may: the kernel's
        # parent-death signal (`die_with_parent`) follows the *thread* that started a process,
        # so a process started by a step's thread would die with that thread.
        while self._wanted.get():
            self._serve_one()

    def _serve_one(self) -> None:
        """Start one process and wait for its setup; then it is idle, ready for a step."""
        try:
            process = _Process.start(self.preparer, self.name, self.nice)
        except Exception:  # steps prepare in their threads instead
            log.warning("%s: could not start a prepare process; steps prepare in the worker's threads",
                        self.name, exc_info=True)
            return
        with self._lock:
            if self._closed:
                process.stop()
                return
            self._processes.append(process)
        failure = process.wait_ready()
        if failure is not None:
            # Closed while it set up (the worker shutting down, its model unloaded): nothing failed.
            (log.debug if self._closed else log.warning)(
                "%s: a prepare process could not set up (%s); steps prepare in the worker's threads",
                self.name, failure)
            self._forget(process)
            return
        with self._lock:
            self._up += 1
        self._idle.put(process)

    def _lost(self, process: _Process, how: str) -> None:
        """A process died (`how`) while preparing: forget it and start another in its place."""
        with self._lock:
            self._up = max(0, self._up - 1)
        self._forget(process)
        log.warning("%s: a prepare process died (%s); starting another", self.name, how)
        if not self._closed:
            self._bring_up()

    def _forget(self, process: _Process) -> None:
        with self._lock:
            if process in self._processes:
                self._processes.remove(process)
        process.stop()


class ModelsPreparing:
    """A batching worker's prepare processes, `count` per loaded model whose specialisation offers
    a `Preparer`: made at the model's first step, started at its first batch of several, closed
    once the model is unloaded."""

    def __init__(self, count: int, *, nice: int = 0) -> None:
        self.count, self.nice = count, nice
        self._by_model: dict[str, tuple[Specialisation, PrepareProcesses | None]] = {}
        self._lock = threading.Lock()

    def for_model(self, model: str, specialisation: Specialisation) -> PrepareProcesses | None:
        """This loaded model's prepare processes (None: it prepares in the worker's threads)."""
        if not self.count:
            return None
        with self._lock:
            owner, processes = self._by_model.get(model, (None, None))
            if owner is specialisation:
                return processes
            stale = processes  # of the same model id, unloaded and loaded again since
            preparer = specialisation.preparer()
            processes = (PrepareProcesses(preparer, self.count, name=model, nice=self.nice)
                         if preparer is not None else None)
            self._by_model[model] = (specialisation, processes)
        if stale is not None:
            stale.close()
        return processes

    def start(self, model: str, *, loaded: list[str]) -> None:
        """Start this model's processes (once), and close those of models no longer `loaded`."""
        with self._lock:
            gone = [self._by_model.pop(m)[1] for m in list(self._by_model) if m not in loaded]
            processes = self._by_model.get(model, (None, None))[1]
        for stale in gone:
            if stale is not None:
                stale.close()
        if processes is not None:
            processes.start()

    def up(self) -> dict[str, int]:
        """Processes up now, by model (for the heartbeat)."""
        with self._lock:
            return {model: processes.up for model, (_, processes) in self._by_model.items() if processes is not None}

    def close(self) -> None:
        with self._lock:
            by_model, self._by_model = self._by_model, {}
        for _, processes in by_model.values():
            if processes is not None:
                processes.close()


class _Process:
    """One prepare process, the worker's end of its pipe, and the memory its replies come through
    (`mmq.workers.shared_replies`; None: through the pipe)."""

    def __init__(self, process: Any, connection: Connection, shared: SharedReplies | None = None) -> None:
        self.process, self.connection, self.shared = process, connection, shared

    @classmethod
    def start(cls, preparer: Preparer, name: str, nice: int = 0) -> _Process:
        ours, theirs = _START.Pipe(duplex=True)  # a socket pair: it can carry the memory's descriptor
        shared, fd = _shared_memory(name)
        process = _START.Process(target=_serve, args=(theirs, preparer, os.getpid(), nice,
                                                      SHARED_BYTES if shared else 0),
                                 name=f"{name}-prepare", daemon=True)
        try:
            process.start()
            theirs.close()  # theirs alone now: when the process dies, reading ours ends (EOFError)
            if fd is not None:
                reduction.send_handle(ours, fd, process.pid)
        except BaseException:
            if process.pid is not None:
                process.kill()
            ours.close()
            if shared is not None:
                shared.close()
            raise
        finally:
            if fd is not None:
                os.close(fd)  # the process holds its own descriptor now
        return cls(process, ours, shared)

    def take(self, reply: bytes) -> tuple[bytes, list[bytearray]]:
        """A reply's pickle and its out-of-band buffers."""
        return self.shared.take(reply) if self.shared is not None else (reply, [])

    def wait_ready(self) -> str | None:
        """None once the process is set up; else why it is not."""
        try:
            kind, detail = pickle.loads(self.connection.recv_bytes())
        except (EOFError, OSError):
            return f"it died while setting up ({self.ended()})"
        return None if kind == "ready" else str(detail)

    def ended(self) -> str:
        self.process.join(timeout=2)
        code = self.process.exitcode
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def stop(self) -> None:
        try:
            self.connection.send_bytes(pickle.dumps(None))
        except (OSError, ValueError):
            pass
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=2)
        self.connection.close()
        if self.shared is not None:
            self.shared.close()


def _shared_memory(name: str) -> tuple[SharedReplies | None, int | None]:
    try:
        made = SharedReplies.create(SHARED_BYTES)
    except OSError as error:  # out of memory, a sandbox without memfd: through the pipe
        log.warning("%s: a prepare process's replies go through its pipe (no shared memory: %s)", name, error)
        return None, None
    return made if made is not None else (None, None)


def _serve(connection: Connection, preparer: Preparer, parent: int, nice: int = 0,
           shared_bytes: int = 0) -> None:
    """The prepare process: set up, say so, then prepare one request at a time until told to stop."""
    die_with_parent(signal.SIGKILL)  # never outlives its worker, however that ends
    if os.getppid() != parent:  # the worker ended before the line above: nobody to prepare for
        return
    shared = None  # shared_bytes 0: no memory was made, the replies go through the pipe
    try:
        if shared_bytes:
            shared = SharedReplies.attach(reduction.recv_handle(connection), shared_bytes)
    except (EOFError, OSError):  # the worker is gone, or gave up on this process
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the worker's to handle
    from .cpu_priority import lower_this_process
    from .devices import limit_cpu_threads

    limit_cpu_threads()  # the worker's MMQ_TORCH_THREADS: each process is one more core's work
    lower_this_process(nice)  # it feeds the model: below the thread that runs it
    try:
        preparer.setup()
    except BaseException as error:  # noqa: BLE001 - said to the worker, which prepares in its threads
        connection.send_bytes(pickle.dumps(("failed", f"{type(error).__name__}: {error}")))
        return
    connection.send_bytes(pickle.dumps(("ready", None)))
    while True:
        try:
            request = pickle.loads(connection.recv_bytes())
        except (EOFError, OSError):
            return
        if request is None:
            return
        task, inputs = request
        try:
            reply = _dumps(("ok", preparer.prepare(task, inputs)), shared)
        except Exception as error:  # noqa: BLE001 - the step's error, raised in its own thread
            reply = _error_reply(task, error, shared)
        connection.send_bytes(reply)


class _Pickler(pickle.Pickler):
    """Tensors travel as numpy arrays: unpickling a 384 px image's pixel values (1.8 MB), which
    the worker does under its interpreter lock, took 0.2 ms here as a torch tensor (torch
    serialises its storage as a file) and 0.05 ms as an array."""

    def reducer_override(self, obj: Any) -> Any:
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor) and obj.device.type == "cpu" \
                and not obj.requires_grad and obj.layout == torch.strided:
            try:
                return torch.from_numpy, (obj.numpy(),)
            except TypeError:  # a dtype numpy lacks (bfloat16): torch's own way
                return NotImplemented
        return NotImplemented


def _dumps(value: Any, shared: SharedReplies | None = None) -> bytes:
    if shared is not None:
        return shared.dumps(value, _Pickler)
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def _error_reply(task: str, error: Exception, shared: SharedReplies | None = None) -> bytes:
    try:
        return _dumps(("error", error), shared)
    except Exception:  # noqa: BLE001 - an exception that does not pickle: its type and message
        failed = MMQError(f"{task}: preparing the inputs failed: {type(error).__name__}: {error}")
        return _dumps(("error", failed), shared)
