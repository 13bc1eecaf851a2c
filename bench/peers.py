"""B2's other two sides, each in its own process: the direct in-process loop and Ray Serve.

`python -m bench.peers direct|ray BATCH PHOTO...` captions the photos given (one list per run,
runs separated by `--`) with the same CaptionSpecialisation as the mmq worker (the model of
MMQ_CAPTION_MODEL, MMQ_TORCH_THREADS threads), and prints one JSON line: each run's images per
second and the batch sizes it ran. Every side is timed alike: from the images' bytes in hand to
all their captions back.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_WAIT_S = 0.02  # Ray's batch_wait_timeout_s: the same as the mmq worker's MMQ_CAPTION_MAX_WAIT_MS
MAX_NEW_TOKENS = 20


def load_captioner() -> Any:
    """The mmq worker's captioner, built from this process's environment as the worker builds it."""
    from mmq.tasks.settings import Settings
    from mmq.workers.caption import CaptionSpecialisation
    from mmq.workers.devices import limit_cpu_threads, pick_device
    from mmq.workers.specialisation_base import ModelContext

    limit_cpu_threads()
    settings = Settings.from_env()
    model = os.environ.get("MMQ_CAPTION_MODEL", "tiny")
    captioner = CaptionSpecialisation(ModelContext(model=model, device=pick_device(),
                                                   cache_dir=settings.data_dir / "models", settings=settings))
    captioner.setup()
    return captioner


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def caption_batch(captioner: Any, images: list[bytes]) -> list[str]:
    from mmq.workers.specialisation_base import ArtifactInput

    inputs = [{"image": ArtifactInput(media_type="image/jpeg", sha256="", size=len(data),
                                      fetch=lambda data=data: data), "max_new_tokens": MAX_NEW_TOKENS}
              for data in images]
    return [out["text"] for out in captioner.run("caption", inputs, lambda done, total: None)]


def direct_runs(batch: int, runs: list[list[bytes]]) -> dict[str, Any]:
    """The limit: the model called in this process, in batches of `batch`, no queue at all."""
    captioner = load_captioner()
    caption_batch(captioner, runs[0][:batch])  # warm-up
    rates, sizes = [], Counter()
    wall, cpu = time.perf_counter(), time.process_time()
    for images in runs[1:]:
        started = time.perf_counter()
        for i in range(0, len(images), batch):
            sizes[len(images[i:i + batch])] += 1
            caption_batch(captioner, images[i:i + batch])
        rates.append(len(images) / (time.perf_counter() - started))
    cores = (time.process_time() - cpu) / (time.perf_counter() - wall)
    return {"rates": rates, "batches": dict(sizes), "threads": torch_threads(), "cores": cores}


class RayCaptioner:
    """A Ray Serve deployment: the same captioner behind `@serve.batch`, counting its batch sizes."""

    def __init__(self, batch: int) -> None:
        from ray import serve

        self.captioner = load_captioner()
        self.sizes: Counter[int] = Counter()
        self.caption = serve.batch(max_batch_size=batch, batch_wait_timeout_s=MAX_WAIT_S)(self._caption)

    async def _caption(self, images: list[bytes]) -> list[str]:
        self.sizes[len(images)] += 1
        return caption_batch(self.captioner, images)

    async def __call__(self, image: bytes) -> str:
        return await self.caption(image)

    def threads(self) -> int:
        return torch_threads()

    def cpu_s(self) -> float:
        return time.process_time()  # CPU seconds of the replica's process, all its threads

    def take_sizes(self) -> dict[int, int]:
        sizes, self.sizes = dict(self.sizes), Counter()
        return sizes


def ray_runs(batch: int, runs: list[list[bytes]]) -> dict[str, Any]:
    """Ray Serve on this machine: no dashboard, no HTTP proxy, one replica on the same threads."""
    import ray
    from ray import serve

    gpus = 1 if os.environ.get("MMQ_DEVICE") == "cuda" else 0  # bench/gpu.sh: the replica gets the GPU
    ray.init(num_cpus=2, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith(("MMQ_", "HF_"))}})
    serve.start(proxy_location="Disabled")
    deployment = serve.deployment(RayCaptioner, max_ongoing_requests=4 * batch,
                                  ray_actor_options={"num_cpus": 1, "num_gpus": gpus})
    handle = serve.run(deployment.bind(batch), name="bench-caption", route_prefix=None)
    _through(handle, runs[0][:batch])  # warm-up
    handle.take_sizes.remote().result()
    rates, sizes = [], Counter()
    wall, cpu = time.perf_counter(), handle.cpu_s.remote().result()
    for images in runs[1:]:
        started = time.perf_counter()
        _through(handle, images)
        rates.append(len(images) / (time.perf_counter() - started))
        sizes.update(handle.take_sizes.remote().result())
    cores = (handle.cpu_s.remote().result() - cpu) / (time.perf_counter() - wall)
    threads = handle.threads.remote().result()
    serve.shutdown()
    ray.shutdown()
    return {"rates": rates, "batches": {int(k): v for k, v in sizes.items()}, "threads": threads,
            "cores": cores}


def _through(handle: Any, images: list[bytes]) -> list[str]:
    responses = [handle.remote(data) for data in images]  # all at once, as B2 submits to mmq
    return [response.result() for response in responses]


Runs = Callable[[int, list[list[bytes]]], dict[str, Any]]
SIDES: dict[str, Runs] = {"direct": direct_runs, "ray": ray_runs}


def main(argv: list[str]) -> int:
    side, batch, rest = argv[0], int(argv[1]), argv[2:]
    runs: list[list[bytes]] = [[]]
    for arg in rest:
        if arg == "--":
            runs.append([])
        else:
            runs[-1].append(Path(arg).read_bytes())
    print(json.dumps(SIDES[side](batch, runs)), flush=True)
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop(asyncio.new_event_loop())
    raise SystemExit(main(sys.argv[1:]))
