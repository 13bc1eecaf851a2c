"""Graceful shutdown and the multi-GPU supervisor, with real worker processes on a private Redis.
Faked: the model hub (tiny random models) and the GPU (the code path is CPU; `--gpus 0,1` only
sets CUDA_VISIBLE_DEVICES for each child, which finds no GPU and uses the CPU)."""

import os
import signal
import socket
import subprocess
import sys
import time

import psutil

from mmq.tasks import JobStatus, heartbeats
from mmq.tasks.processes import die_with_parent


def running_with_progress(job, timeout_s=120):
    """Block until the job's step reports progress: it is then in the middle of its work."""
    for event in job.events(timeout_s=timeout_s):
        if event["type"] == "step" and (event.get("progress") or [0])[0] > 0:
            return event
    raise AssertionError("the step never reported progress")


def test_sigterm_lets_the_running_step_finish(make_stack, start_worker):
    stack = make_stack(MMQ_SHUTDOWN_TIMEOUT_S="120")
    worker = start_worker(stack, "diffusion")
    with stack.client() as client:
        job = client.submit("text2image", prompt="a slow one", steps=40, width=128, height=128)
        running_with_progress(job)
        os.kill(worker.process.pid, signal.SIGTERM)  # the Celery parent only, as an orchestrator does
        assert worker.process.wait(timeout=150) == 0
        record = job.wait(timeout_s=10)
    assert record.status is JobStatus.SUCCEEDED
    assert record.step_states["text2image"].attempts == 1
    redis = stack.redis_client()  # acknowledged: neither back in the queue nor held as unacked
    assert redis.llen("diffusion") == 0 and redis.hlen("unacked") == 0


def test_a_step_past_the_shutdown_timeout_is_requeued_and_finished_elsewhere(make_stack, start_worker):
    stack = make_stack(MMQ_SHUTDOWN_TIMEOUT_S="1")
    first = start_worker(stack, "diffusion")
    with stack.client() as client:
        job = client.submit("text2image", prompt="a long one", steps=150, width=256, height=256)
        running_with_progress(job)
        os.kill(first.process.pid, signal.SIGTERM)
        first.process.wait(timeout=60)
        assert job.status() is JobStatus.RUNNING  # cut short, not failed
        assert stack.redis_client().llen("diffusion") == 1  # back in its queue at once
        start_worker(stack, "diffusion")  # the replacement picks the requeued step up
        record = job.wait(timeout_s=300)
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert record.step_states["text2image"].attempts == 2


def test_the_supervisor_restarts_a_killed_child_and_stops_all(make_stack, tmp_path):
    stack = make_stack()
    redis = stack.redis_client()
    log = open(tmp_path / "supervisor.log", "wb")
    supervisor = subprocess.Popen([sys.executable, "-m", "mmq.workers", "sentence", "--gpus", "0,1"],
                                  env=stack.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                  preexec_fn=die_with_parent)
    host = socket.gethostname()

    def ready_children():
        """pid of each GPU's ready worker, from the readiness keys."""
        found = {}
        for beat in heartbeats.workers(redis):
            if not (beat["specialisation"] == "sentence" and beat["host"] == host and heartbeats.is_ready(beat)):
                continue
            gpu, pid = beat["hostname"].split("@")[0].split("-")[1:3]
            if psutil.pid_exists(int(pid)):
                found[gpu] = int(pid)
        return found

    def wait_for(until, timeout_s=180):
        """Readiness snapshots until `until` holds for one; that one."""
        deadline = time.monotonic() + timeout_s
        while not until(value := ready_children()):
            assert supervisor.poll() is None, (tmp_path / "supervisor.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "supervisor.log").read_text()[-3000:]
            time.sleep(0.2)
        return value

    try:
        first = wait_for(lambda c: len(c) == 2)
        assert set(first) == {"gpu0", "gpu1"}
        os.kill(first["gpu1"], signal.SIGKILL)
        again = wait_for(lambda c: len(c) == 2 and c["gpu1"] != first["gpu1"])
        assert again["gpu0"] == first["gpu0"]  # the other child was left alone
        children = [psutil.Process(pid) for pid in again.values()]
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=120) == 0
        assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        log.close()
