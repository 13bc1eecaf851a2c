"""A private stack for a benchmark: Redis, SeaweedFS and worker processes, stopped afterwards."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mmq.clients import Client
from mmq.clients.servers import start_redis, start_seaweed, stop
from mmq.tasks import heartbeats
from mmq.tasks.processes import die_with_parent
from mmq.tasks.specialisation_specs import SPECIALISATIONS, worker_name

ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = ROOT / ".mmq" / "bench"  # tiny models are built once and kept between runs


class BenchStack:
    def __init__(self, **env: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mmq-bench-")
        tmp = Path(self._tmp.name)
        self.redis = start_redis(tmp / "redis", persistent=False, tied=True)
        self.s3 = start_seaweed(tmp / "s3", credentials=("bench", "bench-secret"), tied=True)
        MODEL_CACHE.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MMQ_", "AWS_"))}
        self.env.update(model_settings())  # the checkpoints and device a GPU run was given, for every side
        self.env.update({
            "MMQ_BROKER_URL": f"redis://127.0.0.1:{self.redis.port}/0",
            "MMQ_S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3.port}", "MMQ_S3_BUCKET": "mmq-bench",
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
            "MMQ_DATA_DIR": str(MODEL_CACHE), "MMQ_TORCH_THREADS": "1", "HF_HUB_OFFLINE": "1",
            **({} if real_models() else {spec.model_env_var: "tiny" for spec in SPECIALISATIONS.values()}),
            **env,
        })
        self.workers: list[subprocess.Popen] = []
        self.logs = tmp

    def __enter__(self) -> BenchStack:
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            stop(worker.pid, timeout_s=20)
        stop(self.redis.pid)
        stop(self.s3.pid)
        self._tmp.cleanup()

    def client(self) -> Client:
        from mmq.tasks.settings import Settings

        return Client(settings=Settings.from_env(self.env))

    def redis_client(self) -> Any:
        from mmq.tasks.settings import Settings

        return Settings.from_env(self.env).redis.sync_client()

    def start_worker(self, specialisation: str, *, wait: bool = True, **env: str) -> subprocess.Popen:
        log = open(self.logs / f"worker-{specialisation}-{len(self.workers)}.log", "wb")
        process = subprocess.Popen([sys.executable, "-m", "mmq.workers", specialisation], env={**self.env, **env},
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=die_with_parent)
        self.workers.append(process)
        if wait:
            self.wait_ready(specialisation, process)
        return process

    def heartbeat_key(self, specialisation: str, process: subprocess.Popen) -> str:
        return heartbeats.beat_key(worker_name(specialisation, None, process.pid, socket.gethostname()))

    def wait_ready(self, specialisation: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
        redis, key = self.redis_client(), self.heartbeat_key(specialisation, process)
        deadline = time.monotonic() + timeout_s
        while json.loads(redis.get(key) or "{}").get("phase") != heartbeats.Phase.READY.value:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{specialisation} worker did not start; see {self.logs}")
            time.sleep(0.05)

    def await_prepare_processes(self, specialisation: str, timeout_s: float = 120) -> None:
        """Until the worker's heartbeat counts its prepare processes up, as many as it has (they
        start at its first batch of several steps, once, like loading the model: not what a timed
        run measures)."""
        from mmq.tasks.settings import Settings

        wanted = Settings.from_env(self.env).serving_for(specialisation).prepare_processes
        redis, deadline = self.redis_client(), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            beats = [w for w in heartbeats.workers(redis) if w["specialisation"] == specialisation]
            if beats and sum(beats[0].get("prepare_processes", {}).values()) >= wanted:
                return
            time.sleep(0.25)
        raise RuntimeError(f"the {specialisation} worker's {wanted} prepare processes did not come up in {timeout_s} s")

    def stop_workers(self) -> None:
        for worker in self.workers:
            stop(worker.pid, timeout_s=20)
        self.workers.clear()


def sample_image() -> Path:
    return ROOT / "samples" / "house.png"


def real_models() -> bool:
    """`MMQ_BENCH_MODELS=env` (bench/gpu.sh): the models named by MMQ_<NAME>_MODEL, not tiny ones."""
    return os.environ.get("MMQ_BENCH_MODELS") == "env"


def model_settings() -> dict[str, str]:
    """With real models: the MMQ_<NAME>_MODEL(S) and MMQ_DEVICE of this environment, which every
    side of a comparison (workers and in-process baselines) must use alike."""
    if not real_models():
        return {}
    names = {spec.model_env_var for spec in SPECIALISATIONS.values()} | {"MMQ_DEVICE"}
    return {k: v for k, v in os.environ.items() if k in names}


def caption_model() -> str:
    return os.environ["MMQ_CAPTION_MODEL"] if real_models() else "tiny"
