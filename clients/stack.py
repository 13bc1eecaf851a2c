"""The embedded local stack behind `mmq up` / `mmq down`: Redis, SeaweedFS and one worker per
specialisation, in a data folder, with the connection settings recorded in `<data dir>/stack.json`.

`up` is safe to run twice (a running stack is reused); `down` stops exactly the processes that
`up` recorded, checking that each pid still runs the command it started before signalling it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmq.tasks import heartbeats
from mmq.tasks.errors import StackError
from mmq.tasks.settings import STACK_FILE, TINY, Settings
from mmq.tasks.specialisation_specs import SPECIALISATIONS, worker_name

from . import planning
from .servers import free_port, pid_alive, port_free, start_redis, start_seaweed, stop

HUB = "hub"
WORKER_START_TIMEOUT_S = 300.0  # to the first heartbeat; the load itself may take as long as it takes
LOADING_NOTE_S = 30.0
SERVER_START_TIMEOUT_S = 60.0  # the gateway, Flower
DEFAULT_GATEWAY_PORT = 8600
DEFAULT_FLOWER_PORT = 5555
WORKER_STOP_TIMEOUT_S = 180.0  # beyond the default shutdown timeout, so a running step can finish
LOCAL_ACCESS_KEY = "mmq-local"
LOCAL_SECRET_KEY = "mmq-local-secret"


@dataclass
class StackProcess:
    name: str
    pid: int
    marker: str  # a word of its command line, checked before we signal the pid
    port: int | None = None
    gpu: int | None = None  # a worker's --gpus

    def running(self) -> bool:
        if not pid_alive(self.pid):
            return False
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return False
        return self.marker in cmdline


@dataclass
class StackState:
    env: dict[str, str]
    processes: list[StackProcess] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)

    @property
    def gateway_url(self) -> str | None:
        return self._url("gateway")

    @property
    def flower_url(self) -> str | None:
        return self._url("flower")

    def _url(self, name: str) -> str | None:
        port = next((p.port for p in self.processes if p.name == name), None)
        return f"http://127.0.0.1:{port}" if port else None

    def save(self, data_dir: Path) -> None:
        path = data_dir / STACK_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, data_dir: Path) -> StackState | None:
        path = data_dir / STACK_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(env=data["env"], processes=[StackProcess(**p) for p in data["processes"]],
                   started_at=data["started_at"])


class LocalStack:
    """Start, find and stop the embedded stack of one data folder."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).resolve()

    def up(self, *, models: str = TINY, specialisations: Iterable[str] = tuple(SPECIALISATIONS),
           gateway: bool = True, flower: bool = True, log: callable = print) -> StackState:
        """Start the stack and wait until every worker has loaded its model; if any cannot (or
        anything else fails to start), stop all that was started and raise `StackError` saying why."""
        existing = StackState.load(self.data_dir)
        if existing and all(p.running() for p in existing.processes):
            log(f"mmq stack already up in {self.data_dir}")
            return existing
        if existing:
            log("a previous stack is partly down; stopping what is left of it")
            self.down(log=lambda _msg: None)
        specialisations = list(specialisations)
        placement = planning.place(specialisations, models_env(os.environ, models))
        for line in placement.lines():
            log(line)
        refused = planning.refusal(placement)
        if refused:
            raise StackError(refused)  # before anything starts: nothing to stop
        try:
            return self._start(models, specialisations, placement, gateway, flower, log)
        except BaseException:  # a failed load, a port, Ctrl-C: leave nothing running
            log("stopping what was started")
            self.down(log=lambda _msg: None)
            raise

    def _start(self, models: str, specialisations: list[str], placement: planning.Placement, gateway: bool,
               flower: bool, log: callable) -> StackState:
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        redis = start_redis(self.data_dir / "redis")
        state = StackState(env={}, processes=[StackProcess("redis", redis.pid, "redis-server", redis.port)])
        state.save(self.data_dir)  # from here on, `down` can clean up whatever happens next
        s3 = start_seaweed(self.data_dir / "s3", credentials=(LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY))
        state.processes.append(StackProcess("seaweedfs", s3.pid, "weed", s3.port))
        state.env = {
            "MMQ_DATA_DIR": str(self.data_dir),
            "MMQ_BROKER_URL": f"redis://127.0.0.1:{redis.port}/0",
            "MMQ_RESULT_BACKEND": f"redis://127.0.0.1:{redis.port}/0",
            "MMQ_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3.port}",
            "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
            # Signs the webhooks of jobs submitted directly (tenants' jobs use their own secret).
            "MMQ_WEBHOOK_SECRET": "whsec_" + secrets.token_urlsafe(24),
            "MMQ_FLOWER_BASIC_AUTH": os.environ.get("MMQ_FLOWER_BASIC_AUTH") or "admin:" + secrets.token_urlsafe(12),
        }
        state.save(self.data_dir)
        log(f"redis on port {redis.port}, S3 on http://127.0.0.1:{s3.port}")
        if gateway:
            state.processes.append(self._start_gateway(state.env))
            state.save(self.data_dir)
        for name in specialisations:
            state.processes.append(self._start_worker(name, state.env, models, placement.gpu_of(name)))
            state.save(self.data_dir)
        self._wait_for_workers(state, log)
        if gateway:
            self._wait_until_it_answers(state, "gateway", "/healthz", log)
        if flower:  # after the workers: Flower asks them for their queues and stats as it starts
            state.processes.append(self._start_flower(state.env))
            state.save(self.data_dir)
            # Named only once it answers (401 without its password: it is up), as the gateway is.
            self._wait_until_it_answers(state, "flower", "/api/workers", log)
        return state

    def down(self, *, log: callable = print) -> list[str]:
        state = StackState.load(self.data_dir)
        if state is None:
            log(f"no mmq stack recorded in {self.data_dir}")
            return []
        running = [process for process in state.processes if process.running()]
        workers = [process for process in running if process.name.startswith("worker")]
        # Workers first (a warm shutdown acknowledges nothing it has not finished), all at once:
        # each gets SIGTERM alone, as an orchestrator sends it, and finishes its step in parallel.
        with ThreadPoolExecutor(max_workers=max(1, len(workers))) as pool:
            list(pool.map(lambda worker: stop(worker.pid, group=False, timeout_s=WORKER_STOP_TIMEOUT_S), workers))
        # Then the servers, the gateway and Flower before Redis and S3 they talk to.
        servers = sorted((p for p in running if p not in workers), key=lambda p: p.name not in ("gateway", "flower"))
        for process in servers:
            stop(process.pid, group=True, timeout_s=15.0)
        stopped = []
        for process in [*workers, *servers]:
            stopped.append(process.name)
            log(f"stopped {process.name} (pid {process.pid})")
        (self.data_dir / STACK_FILE).unlink(missing_ok=True)
        return stopped

    def _start_worker(self, name: str, stack_env: Mapping[str, str], models: str, gpu: int | None) -> StackProcess:
        env = models_env({**os.environ, **stack_env}, models)
        if models == HUB:  # checked on disk before anything started: loads need no network
            env["HF_HUB_OFFLINE"] = "1"
        log_file = open(self.data_dir / "logs" / f"worker-{name}.log", "ab")
        pinned = ["--gpus", str(gpu)] if gpu is not None else []  # where the plan put it
        process = subprocess.Popen([sys.executable, "-m", "mmq.workers", name, *pinned], env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log_file.close()
        return StackProcess(f"worker:{name}", process.pid, "mmq.workers", gpu=gpu)

    def _start_gateway(self, stack_env: dict[str, str]) -> StackProcess:
        port = DEFAULT_GATEWAY_PORT if port_free(DEFAULT_GATEWAY_PORT) else free_port()
        stack_env["MMQ_GATEWAY_PORT"] = str(port)
        log_file = open(self.data_dir / "logs" / "gateway.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "mmq.clients.gateway"], env={**os.environ, **stack_env},
                                   stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        log_file.close()
        return StackProcess("gateway", process.pid, "mmq.clients.gateway", port)

    def _start_flower(self, stack_env: dict[str, str]) -> StackProcess:
        port = DEFAULT_FLOWER_PORT if port_free(DEFAULT_FLOWER_PORT) else free_port()
        env = {**os.environ, **stack_env, "FLOWER_BASIC_AUTH": stack_env["MMQ_FLOWER_BASIC_AUTH"]}
        log_file = open(self.data_dir / "logs" / "flower.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "celery", "--broker", stack_env["MMQ_BROKER_URL"],
                                    "flower", f"--port={port}", "--address=127.0.0.1"],
                                   env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        log_file.close()
        return StackProcess("flower", process.pid, "flower", port)

    def _wait_until_it_answers(self, state: StackState, name: str, path: str, log: callable) -> None:
        """Until the HTTP server `name` answers on its port (any status but a server error)."""
        import httpx

        process = next(p for p in state.processes if p.name == name)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{process.port}{path}", timeout=2).status_code < 500:
                    log(f"{name} ready on http://127.0.0.1:{process.port}")
                    return
            except httpx.HTTPError:
                pass
            if not process.running():
                raise StackError(f"{name} exited at start; see {self.data_dir / 'logs' / (name + '.log')}")
            if time.monotonic() > deadline:
                raise StackError(f"{name} did not answer within {SERVER_START_TIMEOUT_S:.0f} s")
            time.sleep(0.2)

    def _wait_for_workers(self, state: StackState, log: callable) -> None:
        """Until every worker is ready, however long its model takes to load (said every
        LOADING_NOTE_S); a worker that failed to load (or died) ends the wait at once with its
        reason, and so does one that never starts its heartbeat."""
        client = Settings.from_env(state.env).redis.sync_client()
        host = socket.gethostname()
        waiting = {p.name: heartbeats.beat_key(worker_name(p.name.split(":", 1)[1], p.gpu, p.pid, host))
                   for p in state.processes if p.name.startswith("worker:")}
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        next_note = time.monotonic() + LOADING_NOTE_S
        while waiting:
            beats = {name: json.loads(client.get(key) or "{}") for name, key in waiting.items()}
            for name, beat in beats.items():
                if beat.get("phase") == heartbeats.Phase.READY.value:
                    log(f"{name} ready")
                    del waiting[name]
                elif beat.get("phase") == heartbeats.Phase.FAILED.value:
                    raise StackError(f"{name} could not load its model: {beat.get('error')}")
            dead = [p for p in state.processes if p.name in waiting and not p.running()]
            if dead:
                raise StackError(f"{dead[0].name} exited while loading; see "
                                 f"{self.data_dir / 'logs' / (dead[0].name.replace(':', '-') + '.log')}")
            silent = [name for name in waiting if not beats[name]]
            if silent and time.monotonic() > deadline:
                raise StackError(f"no heartbeat after {WORKER_START_TIMEOUT_S:.0f} s from: {', '.join(silent)}")
            if waiting and time.monotonic() > next_note:
                log("still loading: " + ", ".join(f"{n} ({_loading_note(beats[n])})" for n in waiting))
                next_note = time.monotonic() + LOADING_NOTE_S
            time.sleep(0.2)


def _loading_note(beat: dict[str, Any]) -> str:
    """A waiting worker for people: its phase, or that its first heartbeat has not come yet (a
    worker still importing its libraries, which `describe` alone would call ready)."""
    return heartbeats.describe(beat) if beat else "starting: no heartbeat yet"


def models_env(env: Mapping[str, str], models: str) -> dict[str, str]:
    """The workers' environment: with `--models tiny`, every MMQ_<NAME>_MODEL left unset is tiny."""
    env = dict(env)
    if models == TINY:
        for spec in SPECIALISATIONS.values():
            env.setdefault(spec.model_env_var, TINY)
    return env
