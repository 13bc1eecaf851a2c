"""A worker's model on the way in: loads that take longer than Celery allows a pool process, loads
that fail, and what users and operators see meanwhile. Real worker processes on private Redis.

Faked: the model hub (`tests/hub.py` stands in for it, serving tiny checkpoints over its real
protocol; it is also what makes a load slow, honestly: it answers each request after a delay, as
a slow or distant hub does, and huggingface_hub asks it on every load) and the GPU (CPU here).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from mmq.clients.stack import StackState
from mmq.tasks import JobStatus, heartbeats
from mmq.tasks.heartbeats import EXIT_LOAD_FAILED
from mmq.tasks.processes import die_with_parent
from mmq.workers.diffusion.tiny import build_tiny_stable_diffusion
from mmq.workers.models import resolve_model
from mmq.workers.seq2seq.tiny import build_tiny_bart
from tests.conftest import WorkerProcess, worker_phase
from tests.hub import HubStandIn

CELERY_UP_TIMEOUT_S = 4.0  # Celery's worker_proc_alive_timeout, which killed slow respawns
TEXT = "The council met on Tuesday. It voted to repair the bridge before winter."


def wait_for(predicate, timeout_s=120, what="condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def tiny_folder(model_cache: Path, kind: str, build) -> Path:
    return Path(resolve_model("tiny", kind=kind, build=build, cache_dir=model_cache / "models"))


def spawn_worker(stack, specialisation: str, log_path: Path) -> subprocess.Popen:
    """A worker process, not waited on (its model may never load)."""
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "mmq.workers", specialisation], env=stack.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)


def mmq(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmq.clients.cli", *args], env=stack.env, capture_output=True,
                          text=True, timeout=120)


def pool_process(worker: subprocess.Popen) -> psutil.Process:
    return wait_for(lambda: next(iter(psutil.Process(worker.pid).children()), None), what="the pool process")


@pytest.fixture
def slow_hub(model_cache):
    hub = HubStandIn({"test/tiny-sd": tiny_folder(model_cache, "stable-diffusion", build_tiny_stable_diffusion)},
                     delay_s=1.0).start()
    yield hub
    hub.stop()


def test_a_pool_process_may_load_for_longer_than_celery_allows_and_then_takes_the_step(
        make_stack, slow_hub, tmp_path):
    # The first load fetches about 24 files, each answered after 1 s: time to look at it loading.
    stack = make_stack(MMQ_DIFFUSION_MODEL="test/tiny-sd", HF_ENDPOINT=slow_hub.url, HF_HUB_OFFLINE="0",
                       HF_HOME=str(tmp_path / "hf"))
    client = stack.client()
    job = client.submit("text2image", prompt="a house at dusk", width=128, height=128, steps=150, seed=4)
    worker = spawn_worker(stack, "diffusion", tmp_path / "worker.log")
    stack.workers.append(WorkerProcess("diffusion", worker, tmp_path / "worker.log"))

    # While it loads: shown as loading, nothing taken from the queue, and the job says why it waits.
    wait_for(lambda: worker_phase(stack.redis_client(), "diffusion", worker.pid) == "loading", what="loading")
    assert "no diffusion worker is ready: 1 loading its model" in (job.waiting() or "")
    assert stack.redis_client().llen("diffusion") == 1  # the parent holds no step while its model loads
    ready = mmq(stack, "ready", "diffusion")
    assert ready.returncode == 1 and "is loading (" in ready.stderr and "s so far)" in ready.stderr
    assert mmq(stack, "ready", "diffusion", "--live").returncode == 0  # alive: no liveness probe kills it
    assert re.search(r"^diffusion-cpu-\d+@\S+ +loading \(\d+ s so far\)", mmq(stack, "status").stdout, re.M)

    # The pool process is killed in the middle of the step; its replacement loads slowly: it asks
    # the hub 3 times, each answered after 2.5 s, where Celery used to allow a respawn 4 s in all.
    wait_for(lambda: (s := job.record().step_states.get("text2image")) and s.progress and s.progress[0] >= 2,
             timeout_s=300, what="the step under way")
    slow_hub.delay_s = 2.5
    first = pool_process(worker)
    os.kill(first.pid, signal.SIGKILL)
    record = job.wait(timeout_s=300)

    assert record.status is JobStatus.SUCCEEDED, record.error
    assert record.step_states["text2image"].attempts == 2
    beat = json.loads(stack.redis_client().get(heartbeats.beat_key(_hostname(worker.pid, "diffusion"))))
    assert beat["pid"] != first.pid and beat["phase"] == "ready"
    # What makes this test mean something: the new pool process took longer than Celery used to allow.
    assert beat["load_s"] > CELERY_UP_TIMEOUT_S, beat
    assert "Timed out waiting for UP message" not in (tmp_path / "worker.log").read_text()


@pytest.mark.parametrize("cause", ["missing folder", "corrupt weights", "unknown id, hub offline"])
def test_a_model_that_cannot_load_takes_no_job_and_its_worker_exits_saying_why(
        cause, make_stack, start_worker, model_cache, tmp_path):
    if cause == "missing folder":
        model, reason = str(tmp_path / "nowhere"), f"model folder {tmp_path / 'nowhere'} does not exist"
    elif cause == "corrupt weights":
        model = tmp_path / "bart"
        shutil.copytree(tiny_folder(model_cache, "bart", build_tiny_bart), model)
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a download cut short
        model, reason = str(model), f"the weights of {model} are corrupt or incomplete"
    else:
        model, reason = "someone/no-such-model", "someone/no-such-model is not on this machine and the hub is off"
    stack = make_stack(MMQ_SUMMARIZE_MODEL=model)
    client = stack.client()
    job = client.submit("summarize", text=TEXT)

    worker = spawn_worker(stack, "summarize", tmp_path / "worker.log")
    assert worker.wait(timeout=120) == EXIT_LOAD_FAILED
    log = (tmp_path / "worker.log").read_text()
    [line] = [line for line in log.splitlines() if "cannot load its model" in line]
    assert reason in line

    redis = stack.redis_client()
    assert job.status() is JobStatus.QUEUED and redis.llen("summarize") == 1 and redis.hlen("unacked") == 0
    assert job.waiting() == f"no summarize worker is ready: {line.split('cannot load its model: ', 1)[1]}"
    if cause != "missing folder":
        return  # the command line's and the operator's part is the same whatever the reason: once is enough
    shown = mmq(stack, "jobs", "get", job.id)
    assert f"waiting: no summarize worker is ready: {reason}" in shown.stdout
    ready = mmq(stack, "ready", "summarize")
    assert ready.returncode == EXIT_LOAD_FAILED and reason in ready.stderr
    run = mmq(stack, "run", "summarize", f"text={TEXT}", "--wait", "--timeout", "6")
    assert run.returncode == 3 and f"waiting: no summarize worker is ready: {reason}" in run.stderr

    stack.env["MMQ_SUMMARIZE_MODEL"] = "tiny"  # the operator fixes the setting
    start_worker(stack, "summarize")
    assert job.wait(timeout_s=120).status is JobStatus.SUCCEEDED
    assert job.waiting() is None and heartbeats.last_load_error(redis, "summarize") is None


def test_a_load_that_fails_on_respawn_stops_the_worker_and_returns_the_step_it_held(
        make_stack, start_worker, model_cache, tmp_path):
    model = tmp_path / "bart"
    shutil.copytree(tiny_folder(model_cache, "bart", build_tiny_bart), model)
    stack = make_stack(MMQ_SUMMARIZE_MODEL=str(model))
    worker = start_worker(stack, "summarize")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # the weights go bad under a running worker

    os.kill(pool_process(worker.process).pid, signal.SIGKILL)  # (the OOM killer, a segfault, a time limit)
    job = stack.client().submit("summarize", text=TEXT)
    assert worker.process.wait(timeout=120) == EXIT_LOAD_FAILED
    redis = stack.redis_client()
    assert job.status() is JobStatus.QUEUED and redis.llen("summarize") == 1 and redis.hlen("unacked") == 0
    assert "corrupt or incomplete" in job.waiting()

    shutil.rmtree(model)
    shutil.copytree(tiny_folder(model_cache, "bart", build_tiny_bart), model)
    start_worker(stack, "summarize")
    assert job.wait(timeout_s=120).status is JobStatus.SUCCEEDED


def test_mmq_up_names_the_specialisation_that_cannot_load_and_stops_what_it_started(model_cache, tmp_path):
    # (A missing folder or checkpoint is refused before anything starts: see test_weights. Corrupt
    # weights are on disk, and only the load finds them out.)
    model = tmp_path / "bart"
    shutil.copytree(tiny_folder(model_cache, "bart", build_tiny_bart), model)
    (model / "model.safetensors").write_bytes(b"not safetensors at all")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMQ_", "AWS_"))}
    env.update(HF_HUB_OFFLINE="1", MMQ_TORCH_THREADS="1", MMQ_SUMMARIZE_MODEL=str(model))
    data_dir = tmp_path / "data"
    up = subprocess.run([sys.executable, "-m", "mmq.clients.cli", "up", "--only", "caption,summarize",
                         "--data-dir", str(data_dir)], env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 1
    assert f"mmq: worker:summarize could not load its model: the weights of {model} are corrupt or " \
           f"incomplete" in up.stderr, up.stderr + up.stdout
    assert StackState.load(data_dir) is None  # nothing left recorded, because nothing is left running
    assert not [p.info for p in psutil.process_iter(["pid", "cmdline", "environ"])
                if (p.info["environ"] or {}).get("MMQ_DATA_DIR") == str(data_dir)
                or str(data_dir) in " ".join(p.info["cmdline"] or [])]


def _hostname(pid: int, specialisation: str) -> str:
    import socket

    from mmq.tasks.specialisation_specs import worker_name

    return worker_name(specialisation, None, pid, socket.gethostname())


def test_a_pool_process_killed_while_it_loads_stops_the_worker_saying_so(make_stack, slow_hub, tmp_path):
    # SIGKILL, as the kernel's OOM killer ends a load that asks for more host memory than there is.
    stack = make_stack(MMQ_DIFFUSION_MODEL="test/tiny-sd", HF_ENDPOINT=slow_hub.url, HF_HUB_OFFLINE="0",
                       HF_HOME=str(tmp_path / "hf"))
    job = stack.client().submit("text2image", prompt="a house", width=64, height=64, steps=2)
    worker = spawn_worker(stack, "diffusion", tmp_path / "worker.log")
    wait_for(lambda: worker_phase(stack.redis_client(), "diffusion", worker.pid) == "loading", what="loading")
    os.kill(pool_process(worker).pid, signal.SIGKILL)

    assert worker.wait(timeout=120) == EXIT_LOAD_FAILED
    assert "died while loading the model" in job.waiting()
    assert job.status() is JobStatus.QUEUED and stack.redis_client().llen("diffusion") == 1


def test_what_is_loaded_can_be_read_while_another_model_loads():
    # The load is a stand-in that waits for the test: a multiplexed checkpoint taking minutes.
    from mmq.tasks import Settings
    from mmq.workers.multiplex import ModelPool
    from mmq.workers.specialisation_base import ModelContext, Specialisation

    started, release = threading.Event(), threading.Event()

    class SlowToLoad(Specialisation):
        def setup(self) -> None:
            started.set()
            release.wait(60)

        def prepare(self, task, inputs):
            return inputs

        def infer(self, task, batch, progress):
            return [{} for _ in batch]

    context = ModelContext(model="m", device="cpu", cache_dir=Path("."), settings=Settings())
    pool = ModelPool(lambda model: SlowToLoad(context), default="m", device="cpu")
    loader = threading.Thread(target=pool.get)
    loader.start()
    assert started.wait(30)
    seen: list = []
    reader = threading.Thread(target=lambda: seen.append((pool.loaded(), pool.loading)))
    reader.start()
    reader.join(timeout=5)  # what the heartbeat does every 10 s
    release.set()
    loader.join(timeout=30)
    assert not reader.is_alive(), "reading what is loaded waited for the load"
    [(loaded, loading)] = seen
    assert loaded == [] and loading[0] == "m"
    assert pool.loaded() == ["m"] and pool.loading is None


FORKING_PARENT = """
import os, sys
from mmq.tasks import Settings
from mmq.workers.app import build_worker_app
from mmq.workers.launcher import prepare_cuda_environment
prepare_cuda_environment(None)
build_worker_app(Settings.from_env({"MMQ_DATA_DIR": sys.argv[1]}), sys.argv[2], hostname="parent")
print(os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"], sorted(
    m for m in ("diffusers", "transformers", "accelerate", "torchvision") if m in sys.modules))
"""


@pytest.mark.parametrize("specialisation", ["diffusion", "depth", "segment"])
def test_the_celery_parent_of_a_prefork_worker_imports_no_model_library(specialisation, tmp_path):
    """On an H100 (2026-12-06) every prefork worker's pool process failed its load: "Cannot
    re-initialize CUDA in forked subprocess", CUDA having been touched in the Celery parent before
    the fork. A CPU cannot show what touched it there; it can show that the parent, up to the fork,
    imports none of the model libraries (which may ask CUDA as they import) and that CUDA's
    availability is asked of NVML, which leaves a forked process free to use CUDA."""
    shown = subprocess.run([sys.executable, "-c", FORKING_PARENT, str(tmp_path), specialisation],
                           capture_output=True, text=True, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert shown.stdout.split(None, 1) == ["1", "[]\n"], shown.stdout
