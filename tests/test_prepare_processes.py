"""Prepare processes (mmq.workers.prepare_processes): a batching worker's `prepare` in processes of
its own. Real processes, started as the worker starts them (spawn); the preparers are stand-ins
(tests/stand_in_preparers.py) for a specialisation's, each doing one thing a real one can do. The
caption worker's own, through a real worker on a real stack, is at the end."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import socket
import time

import psutil
import pytest

from mmq.tasks import JobStatus, heartbeats
from mmq.tasks.errors import InvalidInput
from mmq.workers.prepare_processes import ModelsPreparing, PrepareProcessDied, PrepareProcesses
from mmq.workers.specialisation_base import ArtifactInput
from tests.stand_in_preparers import CannotSetUp, Digests, Pixels


def image(data: bytes) -> ArtifactInput:
    def fetch() -> bytes:
        fetched.append(data)
        return data

    fetched: list[bytes] = []
    return ArtifactInput(media_type="image/png", sha256=hashlib.sha256(data).hexdigest(), size=len(data), fetch=fetch)


def started(preparer, count=2, nice=0) -> PrepareProcesses:
    processes = PrepareProcesses(preparer, count, name="test", nice=nice)
    processes.start()
    deadline = time.monotonic() + 60
    while processes.up < count:
        assert time.monotonic() < deadline, "prepare processes did not come up"
        time.sleep(0.05)
    return processes


def test_an_artifact_input_travels_with_its_bytes_not_its_store():
    travelled = pickle.loads(pickle.dumps(image(b"pixels")))
    assert travelled.read() == b"pixels" and travelled.sha256 == hashlib.sha256(b"pixels").hexdigest()
    assert travelled._fetch is None  # no way back to the store in the other process


def test_steps_are_prepared_in_processes_set_up_once_each():
    processes = started(Digests())
    try:
        results = [processes.prepare("caption", {"image": image(bytes([i]) * 100)}) for i in range(6)]
        assert all(done for done, _ in results)
        prepared = [value for _, value in results]
        assert [p["sha256"] for p in prepared] == [hashlib.sha256(bytes([i]) * 100).hexdigest() for i in range(6)]
        pids = {p["pid"] for p in prepared}
        assert os.getpid() not in pids and len(pids) <= 2
        assert all(p["set_up_in"] == p["pid"] for p in prepared)  # setup ran there, once per process
    finally:
        processes.close()


def test_the_processes_run_below_the_worker_that_started_them():
    # They feed the model: its thread, at the worker's priority, goes first (mmq.workers.cpu_priority).
    processes = started(Digests(), count=2, nice=4)
    try:
        assert processes.prepare("caption", {"image": image(b"x")})[0]
        niceness = [psutil.Process(p.process.pid).nice() for p in processes._processes]
        assert niceness == [min(19, psutil.Process().nice() + 4)] * 2
    finally:
        processes.close()


class _Received:
    """Counts the bytes the worker's end of a process's pipe receives."""

    def __init__(self, connection) -> None:
        self.connection, self.sizes = connection, []

    def __call__(self) -> bytes:
        data = self.connection.__class__.recv_bytes(self.connection)
        self.sizes.append(len(data))
        return data


def prepare_pixels(processes, first_byte: int):
    done, prepared = processes.prepare("caption", {"image": image(bytes([first_byte]) * 10)})
    assert done
    return prepared


def test_pixel_values_come_back_through_shared_memory_not_the_pipe():
    processes = started(Pixels(), count=1)
    try:
        [process] = processes._processes
        received = process.connection.recv_bytes = _Received(process.connection)
        first = prepare_pixels(processes, 7)
        second = prepare_pixels(processes, 9)  # the same process's memory, written again
        assert received.sizes and max(received.sizes) < 4096  # 1.8 MB of pixels, a small pickle
        for prepared, value in ((first, 7), (second, 9)):  # each copied out before the next reply
            pixels = prepared["pixel_values"]
            assert pixels.shape == (3, 384, 384) and pixels.dtype.is_floating_point
            assert bool((pixels == value).all()) and prepared["small"].tolist() == [value] * 4
            pixels += 1  # the worker's own memory: writable, as from the pipe
        assert prepared["pid"] != os.getpid()
    finally:
        processes.close()


def test_a_reply_larger_than_the_shared_memory_comes_through_the_pipe(monkeypatch):
    import mmq.workers.prepare_processes as prepare_processes

    monkeypatch.setattr(prepare_processes, "SHARED_BYTES", 1 << 20)  # a 384 px image's pixels do not fit
    processes = started(Pixels(), count=1)
    try:
        [process] = processes._processes
        received = process.connection.recv_bytes = _Received(process.connection)
        prepared = prepare_pixels(processes, 5)
        assert bool((prepared["pixel_values"] == 5).all()) and prepared["small"].tolist() == [5] * 4
        assert max(received.sizes) > 3 * 384 * 384 * 4  # in the pickle
        again = prepare_pixels(processes, 6)  # the process serves on
        assert bool((again["pixel_values"] == 6).all())
    finally:
        processes.close()


def test_a_process_stopped_as_its_answer_is_read_leaves_the_step_to_prepare_here():
    processes = started(Pixels(), count=1)
    [process] = processes._processes
    read = process.take

    def stopped_meanwhile(reply):
        processes.close()  # its model unloaded as the answer arrived: its shared memory is gone
        return read(reply)

    process.take = stopped_meanwhile
    assert processes.prepare("caption", {"image": image(b"\x05")}) == (False, None)


def test_a_bad_input_fails_its_step_with_the_same_error_as_in_the_worker():
    processes = started(Digests(), count=1)
    try:
        with pytest.raises(InvalidInput, match="image: empty file") as refused:
            processes.prepare("caption", {"image": image(b"")})
        assert refused.value.field == "image"
        assert processes.prepare("caption", {"image": image(b"fine")})[0]  # the process serves on
    finally:
        processes.close()


def test_a_process_that_dies_fails_only_the_step_it_was_preparing_and_is_replaced():
    processes = started(Digests(), count=1)
    try:
        [first] = [p.process.pid for p in processes._processes]
        with pytest.raises(PrepareProcessDied, match=r"died \(killed by SIGKILL\) before it answered; only this step"):
            processes.prepare("caption", {"image": image(b"poison")})
        assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
        # The next step waits for the replacement (or prepares here, while none is up): never lost.
        deadline = time.monotonic() + 60
        while processes.up < 1:
            assert time.monotonic() < deadline, "no replacement came up"
            time.sleep(0.05)
        done, prepared = processes.prepare("caption", {"image": image(b"after")})
        assert done and prepared["pid"] != first
    finally:
        processes.close()


def test_without_a_process_up_steps_prepare_in_the_worker(caplog):
    unstarted = PrepareProcesses(Digests(), 2, name="test")
    assert unstarted.prepare("caption", {"image": image(b"x")}) == (False, None)  # not started yet
    broken = PrepareProcesses(CannotSetUp(), 1, name="test")
    broken.start()
    deadline = time.monotonic() + 60
    while "could not set up" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)
    assert "FileNotFoundError: preprocessor_config.json: no such file" in caplog.text
    assert broken.prepare("caption", {"image": image(b"x")}) == (False, None)
    broken.close()


def test_closing_ends_the_processes():
    processes = started(Digests())
    pids = [p.process.pid for p in processes._processes]
    processes.close()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert processes.up == 0
    assert processes.prepare("caption", {"image": image(b"x")}) == (False, None)  # prepared in the worker


def test_a_caption_worker_prepares_in_its_processes_and_says_so(make_stack, start_worker, tmp_path):
    """The real caption worker (tiny BLIP, its processor loaded again in each prepare process):
    its heartbeat counts the processes up, they are its children, and captions made with them
    are the captions the worker makes preparing in its own threads."""
    from tests.test_batching import BATCHING, pictures

    images = pictures(tmp_path, 8)
    captions = {}
    for processes in ("0", "2"):
        stack = make_stack(**BATCHING, MMQ_CAPTION_PREPARE_PROCESSES=processes)
        worker = start_worker(stack, "caption")
        with stack.client() as client:
            warm = [client.submit("caption", image=path, max_new_tokens=12) for path in images[:4]]
            assert all(job.wait(timeout_s=120).status is JobStatus.SUCCEEDED for job in warm)
            redis = stack.redis_client()
            [beat] = [w for w in heartbeats.workers(redis) if w["specialisation"] == "caption"
                      and w["host"] == socket.gethostname()]
            deadline = time.monotonic() + 90
            while sum(json.loads(redis.get(heartbeats.beat_key(beat["hostname"])))
                      .get("prepare_processes", {}).values()) < int(processes):
                assert time.monotonic() < deadline, "the heartbeat never counted the prepare processes"
                time.sleep(0.5)
            children = psutil.Process(worker.process.pid).children(recursive=True)
            preparing = [c for c in children if "multiprocessing.spawn" in " ".join(c.cmdline())]
            assert len(preparing) == int(processes)
            worker_nice = psutil.Process(worker.process.pid).nice()  # its main thread's
            # MMQ_CAPTION_PREPARE_NICE's default: ten steps below the worker
            assert [c.nice() for c in preparing] == [min(19, worker_nice + 10)] * len(preparing)
            jobs = [client.submit("caption", image=path, max_new_tokens=12) for path in images]
            records = [job.wait(timeout_s=120) for job in jobs]
        assert all(r.status is JobStatus.SUCCEEDED for r in records), [r.error for r in records]
        captions[processes] = [r.outputs["text"] for r in records]
        # A worker killed outright (the kernel's out-of-memory killer, kill -9) takes its prepare
        # processes with it: none is left holding memory on the machine.
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(psutil.pid_exists(c.pid) and psutil.Process(c.pid).status() != psutil.STATUS_ZOMBIE
                  for c in children):
            assert time.monotonic() < deadline, "a prepare process outlived its worker"
            time.sleep(0.2)
    assert captions["2"] == captions["0"]


class _Loaded:
    """A loaded model's specialisation, as `ModelsPreparing` sees it: something with a preparer."""

    def __init__(self, preparer) -> None:
        self._preparer = preparer

    def preparer(self):
        return self._preparer


def test_a_models_processes_are_closed_once_it_is_unloaded_or_loaded_again():
    preparing = ModelsPreparing(1)
    first, other = _Loaded(Digests()), _Loaded(Digests())
    processes = preparing.for_model("blip", first)
    assert preparing.for_model("blip", first) is processes  # the same loaded model: the same processes
    assert ModelsPreparing(0).for_model("blip", first) is None and preparing.for_model("x", _Loaded(None)) is None
    preparing.start("blip", loaded=["blip"])
    deadline = time.monotonic() + 60
    while preparing.up() != {"blip": 1}:
        assert time.monotonic() < deadline, preparing.up()
        time.sleep(0.05)
    [pid] = [p.process.pid for p in processes._processes]
    large = preparing.for_model("blip-large", other)
    preparing.start("blip-large", loaded=["blip-large"])  # blip was unloaded to make room
    assert "blip" not in preparing.up() and processes.up == 0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    reloaded = preparing.for_model("blip-large", _Loaded(Digests()))  # unloaded and loaded again since
    assert reloaded is not large and large._closed  # the old one's processes are gone
    preparing.close()
    assert preparing.up() == {}
