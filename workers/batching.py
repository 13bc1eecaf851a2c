"""Dynamic batching: steps waiting at the same time share one forward pass.

Each step runs in its own thread (Celery's thread pool, concurrency = twice `max_batch`: one batch
on the model, the next one's messages fetched meanwhile) and hands its inputs to `Batcher.run`,
which blocks until its outputs are ready. Where the specialisation allows it
(`concurrent_prepare`), the step prepares its inputs in its own thread first (the read from
storage, the decoding), beside the forward pass of the batch before. One dispatcher thread owns the
model: it takes the first waiting step, gathers more of the same task and model for at most
`max_wait_ms` (and at most `max_batch`), and runs them through the specialisation's contract:
`prepare()` for each step first, so that a step whose inputs are bad ends at once with its own
error, then one `infer()` on the prepared others. A batch that runs out of memory is split in two,
halves again as needed, so that it is not failed whole; a batch whose `infer()` fails otherwise is
inferred again one step at a time, so that a job the model itself trips over fails alone. Either
way a step is prepared once: its prepared inputs go to each `infer()` it is part of (so `infer()`
must not consume them). Progress goes from the model's thread to each step's own thread, which
writes it to the job record: the forward passes never wait on those round trips. A step whose
progress hook raises (its job was cancelled) leaves the batch there and then, and the others keep
the batch's one forward pass; only when every step of a batch has left does the pass stop. Each
step's message is still acknowledged on its own, when its thread returns.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from mmq.tasks.errors import MMQError
from mmq.tasks.settings import TimeLimits

from .cpu_priority import LowersEachThreadOnce
from .memory import first_line, free_memory, infer_in_memory, is_out_of_memory, run_in_memory
from .multiplex import ModelPool
from .prepare_processes import ModelsPreparing
from .specialisation_base import Prepared, Progress, Specialisation

log = logging.getLogger(__name__)
# The longest a batch being gathered waits past its window for steps still being prepared.
ARRIVING_WAIT_MAX_S = 0.5
EXIT_HUNG = 70  # a batch ran past the hard time limit (EX_SOFTWARE): the supervisor starts a new worker


class _Deserted(MMQError):
    """Every step of a batch left it (their jobs ended): the forward pass serves no one."""


@dataclass(eq=False)
class _Waiting:
    task: str
    model: str
    inputs: Mapping[str, Any]
    progress: Progress
    prepared: Prepared = None  # what `prepare()` made of `inputs`, once
    ready: bool = False  # prepared already, in the step's own thread (see `Batcher.run`)
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, Any] | None = None
    error: BaseException | None = None
    # Progress the model's thread reported and the step's own thread has not yet written (see
    # `report`), and what wakes the step's thread: new progress, or its end.
    pending: tuple[int, int] | None = None
    wake: threading.Event = field(default_factory=threading.Event)
    _ending: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> tuple[str, str]:
        return self.task, self.model

    def end(self, *, outputs: dict[str, Any] | None = None, error: BaseException | None = None) -> None:
        """Hand the step its outputs or its error, once: whatever ends it first wins (a step that
        left its batch when its job was cancelled takes no outputs from that batch later)."""
        with self._ending:
            if self.done.is_set():
                return
            self.outputs, self.error = outputs, error
            self.done.set()
        self.wake.set()

    def report(self, done: int, total: int) -> None:
        """Progress, from the model's thread: handed to the step's own thread, which writes it
        (`wait`), so that the forward passes never wait on the job record's round trips."""
        if self.done.is_set():
            return
        self.pending = (done, total)
        self.wake.set()

    def wait(self, timeout_s: float | None) -> bool:
        """In the step's own thread: write the progress reported, until the step ends (True) or
        `timeout_s` passes (False). When the step's progress hook raises (its job ended), the step
        leaves its batch with that error. Progress reported last, just before the outputs, is
        written before the step's thread goes on, so that its events keep their order."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0 or not self.wake.wait(remaining):
                return False
            self.wake.clear()
            pending, self.pending = self.pending, None
            if pending is not None and self.error is None:
                try:
                    self.progress(*pending)
                except Exception as error:  # noqa: BLE001 - it ends this step, never the batch
                    self.end(error=error)
            if self.done.is_set() and self.pending is None:
                return True


def _exit_worker(reason: str) -> None:
    """What a hung batch gets: the process ends at once, as Celery's prefork pool ends a child."""
    log.critical("%s", reason)
    logging.shutdown()
    os._exit(EXIT_HUNG)


class Executor:
    """Runs one step's inputs on the right model: alone (no batching)."""

    def __init__(self, models: ModelPool) -> None:
        self.models = models

    def run(self, task: str, inputs: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        inputs = dict(inputs)
        specialisation = self.models.get(inputs.pop("model", None))
        [outputs] = run_in_memory(specialisation, task, [inputs], progress)
        return outputs

    def close(self) -> None:
        pass


class Batcher(Executor):
    """Runs steps of the batchable tasks together; others alone, in the dispatcher all the same
    (one thread owns the model)."""

    def __init__(self, models: ModelPool, *, max_batch: int, max_wait_ms: int, batchable: frozenset[str],
                 on_batch: Callable[[str, int], None] = lambda task, size: None,
                 batch_setting: str | None = None, limits: TimeLimits | None = None,
                 past_hard_limit: Callable[[str], None] = _exit_worker, prepare_processes: int = 0,
                 prepare_nice: int = 0) -> None:
        super().__init__(models)
        self.preparing = ModelsPreparing(prepare_processes, nice=prepare_nice)  # per loaded model
        # The steps' threads feed the model: they run below its thread (mmq.workers.cpu_priority).
        self._lower_step_thread = LowersEachThreadOnce(prepare_nice)
        # Celery's thread pool enforces no time limit: the batcher does. Past the soft limit a step
        # leaves its batch with SoftTimeLimitExceeded (the pass stops when no step is left in it);
        # a pass still running past the hard limit has hung, and only ending the process frees
        # its device (`past_hard_limit`).
        self.limits = limits
        self._past_hard_limit = past_hard_limit
        self._running_since: float | None = None  # when the batch now on the model started
        self.on_batch = on_batch  # (task, size) of each batch run: for metrics
        self.batch_setting = batch_setting  # named when a batch runs out of memory, e.g. MMQ_X_MAX_BATCH=8
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.batchable = batchable
        self._waiting: queue.Queue[_Waiting | None] = queue.Queue()
        self._held: list[_Waiting] = []  # taken while gathering another batch: first in line next
        # Steps handed to `run` and not yet in line (being read and decoded in their own threads),
        # by (task, model): the batch being gathered for them waits for them, a little longer.
        self._arriving: Counter[tuple[str, str]] = Counter()
        self._arriving_lock = threading.Lock()
        # Batches run, by size ({size: batches}): bounded by max_batch however long the worker lives.
        self.batch_sizes: Counter[int] = Counter()
        self._thread = threading.Thread(target=self._dispatch, name="mmq-batcher", daemon=True)
        self._thread.start()
        if limits is not None:
            threading.Thread(target=self._watch, args=(limits,), name="mmq-batch-watchdog", daemon=True).start()

    def run(self, task: str, inputs: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        inputs = dict(inputs)
        model = inputs.pop("model", None) or self.models.default
        waiting = _Waiting(task, model, inputs, progress)
        self._lower_step_thread()
        self._count_arriving(waiting.key, +1)  # until it is in line: a batch being gathered waits for it
        try:
            self._prepare_here(waiting)
            self._waiting.put(waiting)
        finally:
            self._count_arriving(waiting.key, -1)
        soft_s = self.limits.soft_s if self.limits is not None else None
        if not waiting.wait(soft_s):
            waiting.end(error=SoftTimeLimitExceeded(f"{task}: no outputs within the soft time limit of {soft_s} s"))
        if waiting.error is not None:
            raise waiting.error
        assert waiting.outputs is not None
        return waiting.outputs

    def close(self) -> None:
        self._waiting.put(None)
        self.preparing.close()

    def _count_arriving(self, key: tuple[str, str], change: int) -> None:
        with self._arriving_lock:
            self._arriving[key] += change

    def _prepare_here(self, waiting: _Waiting) -> None:
        """Prepare the step in its own thread (or, through it, in a prepare process), while the
        model's thread runs the batch before: the input's read from storage and its decoding overlap
        the forward pass instead of preceding it. Only for a loaded model whose `prepare()` may run
        beside `infer()`; a bad input raises here, and the step fails alone, at once."""
        specialisation = self.models.peek(waiting.model) if waiting.task in self.batchable else None
        if specialisation is None or not specialisation.concurrent_prepare:
            return
        processes = self.preparing.for_model(waiting.model, specialisation)
        done, prepared = processes.prepare(waiting.task, waiting.inputs) if processes else (False, None)
        waiting.prepared = prepared if done else specialisation.prepare(waiting.task, waiting.inputs)
        waiting.ready = True

    def _dispatch(self) -> None:
        while True:
            first = self._held.pop(0) if self._held else self._waiting.get()
            if first is None:
                return
            batch = self._gather(first) if first.task in self.batchable else [first]
            self.batch_sizes[len(batch)] += 1
            if len(batch) > 1:
                self.preparing.start(first.model, loaded=self.models.loaded())
            try:
                self.on_batch(first.task, len(batch))
            except Exception:  # metrics are best effort
                log.warning("could not record a batch of %d", len(batch), exc_info=True)
            self._running_since = time.monotonic()
            try:
                self._run(batch)
            except BaseException as error:  # noqa: BLE001 - the dispatcher must outlive any batch
                log.exception("the batcher failed on a batch of %d", len(batch))
                for waiting in batch:
                    waiting.end(error=error)
            finally:
                self._running_since = None

    def _watch(self, limits: TimeLimits) -> None:
        """Ends the worker when one batch has run past the hard limit (a hung forward pass)."""
        while True:
            time.sleep(min(1.0, limits.hard_s / 10))
            since = self._running_since
            if since is not None and time.monotonic() - since > limits.hard_s:
                self._past_hard_limit(
                    f"a batch has run for over {limits.hard_s} s, past the hard time limit: the worker exits "
                    "so that its device is freed; its unacknowledged steps go back to the queue")
                return

    def _gather(self, first: _Waiting) -> list[_Waiting]:
        batch = [first]
        held, self._held = self._held, []
        for other in held:  # steps held back before: the same key joins, others stay first in line
            (batch if other.key == first.key and len(batch) < self.max_batch else self._held).append(other)
        started = time.monotonic()
        deadline, latest = started + self.max_wait_s, started + ARRIVING_WAIT_MAX_S
        while len(batch) < self.max_batch:
            now = time.monotonic()
            timeout: float | None = deadline - now
            if timeout <= 0:
                # The window is over; steps of this kind still being read and decoded join this
                # batch rather than pay a forward pass of their own right after it. Steps already in
                # line join it in any case (the last one may have arrived as the window closed).
                timeout = min(0.005, latest - now) if self._arriving[first.key] and now < latest else None
            try:
                other = self._waiting.get(timeout=timeout) if timeout is not None else self._waiting.get_nowait()
            except queue.Empty:
                if timeout is None:
                    break
                continue
            if other is None:
                self._waiting.put(None)  # close after this batch
                break
            (batch if other.key == first.key else self._held).append(other)
        return batch

    def _run(self, batch: list[_Waiting]) -> None:
        """Prepare each step of the batch, then infer the ones whose inputs were good."""
        batch = [waiting for waiting in batch if not waiting.done.is_set()]
        if not batch:
            return
        try:
            specialisation = self.models.get(batch[0].model)
        except Exception as error:  # noqa: BLE001 - the model they all asked for: each step's error
            for waiting in batch:
                waiting.end(error=error)
            return
        self._infer(specialisation, self._prepare(specialisation, batch))

    def _prepare(self, specialisation: Specialisation, batch: list[_Waiting]) -> list[_Waiting]:
        """The steps whose inputs `prepare()` accepted; each of the others ends with its own error."""
        ready = [waiting for waiting in batch if waiting.ready]
        for waiting in batch:
            if waiting.ready:
                continue
            try:
                waiting.prepared = specialisation.prepare(waiting.task, waiting.inputs)
            except Exception as error:  # noqa: BLE001 - handed to the step's own thread
                waiting.end(error=error)
                continue
            ready.append(waiting)
        if len(ready) < len(batch):
            log.info("%d of a batch of %d %s steps had bad inputs and failed; inferring the %d others",
                     len(batch) - len(ready), len(batch), batch[0].task, len(ready))
        return ready

    def _infer(self, specialisation: Specialisation, batch: list[_Waiting]) -> None:
        """One `infer()` for the prepared steps still in the batch; halves after out of memory."""
        batch = [waiting for waiting in batch if not waiting.done.is_set()]  # left a batch: not run again
        if not batch:
            return
        if len(batch) == 1:
            self._infer_alone(specialisation, batch[0])
            return
        cause = None
        try:
            outputs = specialisation.infer(batch[0].task, [w.prepared for w in batch], _fan_out(batch))
        except Exception as error:  # noqa: BLE001 - handed to the steps' own threads
            if not is_out_of_memory(error):
                self._infer_one_by_one(specialisation, batch, error)
                return
            cause = first_line(error)
        if cause is not None:  # outside the `except`: the failed attempt's tensors can be freed
            half = len(batch) // 2
            log.warning("a batch of %d %s steps ran out of memory (%s); freeing memory and running it as "
                        "%d and %d (a lower %s avoids this)", len(batch), batch[0].task, cause, half,
                        len(batch) - half, self.batch_setting or "batch size")
            free_memory(self.models.device)
            self._infer(specialisation, batch[:half])
            self._infer(specialisation, batch[half:])
            return
        if len(outputs) != len(batch):
            raise MMQError(f"{batch[0].task}: {len(outputs)} outputs for a batch of {len(batch)}")
        for waiting, result in zip(batch, outputs):
            waiting.end(outputs=result)

    def _infer_one_by_one(self, specialisation: Specialisation, batch: list[_Waiting], error: Exception) -> None:
        """After a batch's `infer()` failed (not for memory): each step still in it alone, so that
        the one the model trips over fails alone. Steps that left the batch are not run again."""
        remaining = [waiting for waiting in batch if not waiting.done.is_set()]
        if not remaining:
            log.info("every step of a batch of %d %s steps left it; the batch stopped", len(batch), batch[0].task)
            return
        log.info("inferring a batch of %d %s steps failed (%s); inferring the %d still in it one by one",
                 len(batch), batch[0].task, type(error).__name__, len(remaining))
        for waiting in remaining:
            self._infer_alone(specialisation, waiting)

    def _infer_alone(self, specialisation: Specialisation, waiting: _Waiting) -> None:
        try:
            [outputs] = infer_in_memory(specialisation, waiting.task, [waiting.inputs], [waiting.prepared],
                                        _fan_out([waiting]))
        except BaseException as error:  # noqa: BLE001 - handed to the step's own thread
            waiting.end(error=error)
            return
        waiting.end(outputs=outputs)


def _fan_out(batch: list[_Waiting]) -> Progress:
    """One progress hook for a batch (or a step run alone): each step's progress handed to its own
    thread, where a step whose hook raises leaves the batch. Raises only when no step is left to
    compute for, which stops the forward pass."""

    def progress(done: int, total: int) -> None:
        for waiting in batch:
            waiting.report(done, total)
        if all(waiting.done.is_set() for waiting in batch):
            raise _Deserted(f"every step of a batch of {len(batch)} left it")

    return progress
