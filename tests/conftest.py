"""Fixtures that start real servers and real worker processes, and stop them afterwards.

Real: a redis-server process, a SeaweedFS S3 server (`weed mini`), Celery worker processes
(`python -m mmq.workers`), and the real transformers/diffusers model classes. The one thing faked
is the model hub, unreachable here: workers use `tiny` models of the real architectures, built
locally with `save_pretrained` and loaded with `from_pretrained`. Nothing here skips: a missing
server binary fails the run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis  # noqa: F401 - see below
import pytest
import redis as redis_lib

from mmq.clients import Client

# hypothesis is imported up front, not by its pytest plugin at the terminal summary: there, pytest's
# import-time rewriting (ast.parse) can be re-entered by garbage collection finalising a Celery
# AsyncResult (whose __del__ reconnects to the stopped Redis and imports), and CPython 3.11.7 then
# fails with "AST constructor recursion depth mismatch" (a global counter; fixed in 3.11.8).
from mmq.clients.servers import Server, free_port, start_redis, start_seaweed, stop
from mmq.tasks import Settings, heartbeats
from mmq.tasks.processes import die_with_parent
from mmq.tasks.specialisation_specs import SPECIALISATIONS, worker_name

WORKER_READY_TIMEOUT_S = 180
TEST_CREDENTIALS = ("test", "test-secret")  # S3 checks every request's signature
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stack:
    """Connection settings of running servers, as the environment that processes read."""

    redis: Server
    s3: Server
    env: dict[str, str]
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def client(self) -> Client:
        return Client(settings=self.settings)

    def redis_client(self) -> redis_lib.Redis:
        return self.settings.redis.sync_client()


@dataclass
class WorkerProcess:
    specialisation: str
    process: subprocess.Popen
    log_path: Path

    def kill(self) -> None:
        """SIGKILL the whole worker: the Celery parent and its pool process, no goodbye."""
        os.killpg(self.process.pid, 9)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        stop(self.process.pid, timeout_s=20)
        self.process.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def base_env(tmp: Path, redis_port: int, s3_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMQ_", "AWS_"))}
    env.update({
        "MMQ_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MMQ_RESULT_BACKEND": f"redis://127.0.0.1:{redis_port}/0",
        "MMQ_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "MMQ_S3_BUCKET": "mmq-test",
        "AWS_ACCESS_KEY_ID": TEST_CREDENTIALS[0],
        "AWS_SECRET_ACCESS_KEY": TEST_CREDENTIALS[1],
        "MMQ_DATA_DIR": str(tmp),
        **{spec.model_env_var: "tiny" for spec in SPECIALISATIONS.values()},
        "MMQ_TORCH_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        # bench/gpu_checks.sh runs tests with MMQ_TEST_DEVICE=cuda, so that a worker without a GPU
        # fails rather than quietly computing on the CPU; otherwise each worker picks (auto).
        **({"MMQ_DEVICE": os.environ["MMQ_TEST_DEVICE"]} if os.environ.get("MMQ_TEST_DEVICE") else {}),
        **extra,
    })
    return env


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the whole run, so each tiny model is built once."""
    return tmp_path_factory.mktemp("mmq-data")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_seaweed(tmp_path_factory.mktemp("s3"), credentials=TEST_CREDENTIALS, tied=True)
    yield server
    stop(server.pid)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, s3_server: Server) -> Iterator[Stack]:
    """Redis + S3 for the session; workers are added by `start_worker`."""
    redis = start_redis(tmp_path_factory.mktemp("redis"), persistent=False, tied=True)
    running = Stack(redis=redis, s3=s3_server, env=base_env(model_cache, redis.port, s3_server.port))
    yield running
    stop_workers(running.workers)
    stop(redis.pid)


def stop_workers(workers: list[WorkerProcess]) -> None:
    """Each worker's warm shutdown, all at once rather than one after another."""
    with ThreadPoolExecutor(max_workers=max(1, len(workers))) as pool:
        list(pool.map(WorkerProcess.stop, workers))


def launch_worker(stack: Stack, specialisation: str, log_dir: Path) -> WorkerProcess:
    """Start `python -m mmq.workers SPECIALISATION` and wait until its model is loaded."""
    log_path = log_dir / f"worker-{specialisation}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "mmq.workers", specialisation], env=stack.env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=die_with_parent)  # never outlives an interrupted run
    worker = WorkerProcess(specialisation, process, log_path)
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    client = stack.redis_client()
    while worker_phase(client, specialisation, process.pid) != heartbeats.Phase.READY.value:
        if process.poll() is not None:
            raise RuntimeError(f"{specialisation} worker exited at start:\n{worker.log()[-4000:]}")
        if time.monotonic() > deadline:
            worker.stop()
            raise RuntimeError(f"{specialisation} worker not ready:\n{worker.log()[-4000:]}")
        time.sleep(0.1)
    return worker


def worker_phase(redis: redis_lib.Redis, specialisation: str, pid: int) -> str | None:
    """The phase (loading, ready, failed) that the worker started as `pid` last announced, if any."""
    raw = redis.get(heartbeats.beat_key(worker_name(specialisation, None, pid, socket.gethostname())))
    return json.loads(raw)["phase"] if raw else None


@pytest.fixture(scope="session")
def workers(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """A caption worker and a diffusion worker for the session."""
    log_dir = tmp_path_factory.mktemp("worker-logs")
    for name in ("caption", "diffusion"):
        if not any(w.specialisation == name for w in stack.workers):
            stack.workers.append(launch_worker(stack, name, log_dir))
    return stack


@pytest.fixture
def client(workers: Stack) -> Iterator[Client]:
    client = workers.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def sample_image() -> Path:
    return ROOT / "samples" / "house.png"


@pytest.fixture
def make_stack(tmp_path: Path, model_cache: Path, s3_server: Server) -> Iterator[Callable[..., Stack]]:
    """A private Redis (and workers) for a test that kills or restarts things."""
    made: list[Stack] = []

    def make(**env: str) -> Stack:
        redis = start_redis(tmp_path / f"redis-{len(made)}", persistent=True, tied=True)
        own = Stack(redis=redis, s3=s3_server, env=base_env(model_cache, redis.port, s3_server.port, **env))
        made.append(own)
        return own

    yield make
    for own in made:
        stop_workers([worker for worker in own.workers if worker.process.poll() is None])
        stop(own.redis.pid)


@pytest.fixture
def start_worker(tmp_path: Path) -> Callable[[Stack, str], WorkerProcess]:
    """Start a worker of a specialisation on a given stack (stopped with that stack)."""

    def start(on: Stack, specialisation: str) -> WorkerProcess:
        worker = launch_worker(on, specialisation, tmp_path)
        on.workers.append(worker)
        return worker

    return start


@pytest.fixture(scope="session")
def serve(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Stack]:
    """`serve("speech")`: a worker of that specialisation on the session stack, started once."""
    log_dir = tmp_path_factory.mktemp("serve-logs")

    def ensure(specialisation: str) -> Stack:
        if not any(w.specialisation == specialisation and w.process.poll() is None for w in stack.workers):
            stack.workers.append(launch_worker(stack, specialisation, log_dir))
        return stack

    return ensure


def served_client(specialisation: str, *, scope: str = "function") -> Callable[..., Iterator[Client]]:
    """A fixture, named by the name it is assigned to (`depth = served_client("depth")`): a client
    of the session stack, on which a worker of `specialisation` is started once."""

    @pytest.fixture(scope=scope)
    def client_of_worker(serve: Callable[[str], Stack]) -> Iterator[Client]:
        client = serve(specialisation).client()
        yield client
        client.close()

    return client_of_worker


@dataclass
class GatewayProcess:
    """`python -m mmq.clients.gateway` on a free port of the session stack, and its keys."""

    url: str
    process: subprocess.Popen
    log_path: Path
    stack: Stack

    def new_key(self, tenant: str) -> str:
        from mmq.clients.keys import KeyStore

        return KeyStore(self.stack.redis_client()).create(tenant)[1]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def launch_gateway(stack: Stack, log_dir: Path, **env: str) -> GatewayProcess:
    port = free_port()
    log_path = log_dir / f"gateway-{port}.log"
    gateway_env = {**stack.env, "MMQ_GATEWAY_PORT": str(port), **env}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "mmq.clients.gateway"], env=gateway_env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    gateway = GatewayProcess(f"http://127.0.0.1:{port}", process, log_path, stack)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return gateway
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop(process.pid)
                raise RuntimeError(f"gateway did not start:\n{gateway.log()[-4000:]}") from None
            time.sleep(0.1)


@pytest.fixture(scope="session")
def gateway(workers: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The gateway over the session stack (caption and diffusion workers), its webhook dispatcher
    retrying fast. URL inputs may be private addresses here: the tests serve files from localhost."""
    running = launch_gateway(workers, tmp_path_factory.mktemp("gateway"), MMQ_WEBHOOK_BACKOFF_S="0.5",
                             MMQ_ALLOW_PRIVATE_URLS="1")
    yield running
    stop(running.process.pid, timeout_s=20)


# -- reliability figures -------------------------------------------------------------------------
# Each reliability test records one row: the load it held, the faults injected, the bad inputs
# tried, what was lost. `make reliability` collects them into docs/reliability.md.
FIGURES: list[dict[str, object]] = []


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[..., None]:
    def record(title: str, *, load: str, faults: str = "—", bad_inputs: str = "—", lost: int = 0,
               duplicates: int | str = "—", result: str = "") -> None:
        row = {"test": title, "node": request.node.nodeid, "load": load, "faults": faults,
               "bad_inputs": bad_inputs, "lost": lost, "duplicates": duplicates, "result": result}
        print(f"FIGURE {row}")  # each test prints its figure (shown with -rP or -s)
        FIGURES.append(row)

    return record


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    report = os.environ.get("MMQ_RELIABILITY_REPORT")
    if report and FIGURES:
        import json

        Path(report).write_text(json.dumps(FIGURES, indent=2))
