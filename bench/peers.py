"""B2's other two sides, each in its own process: the direct in-process loop and Ray Serve.

`python -m bench.peers direct|ray BATCH` loads its side once, with the same CaptionSpecialisation
as the mmq worker (the model of MMQ_CAPTION_MODEL, MMQ_TORCH_THREADS threads), then captions each
list of photos it is sent on stdin (one JSON line per run) and answers each with one line: images
per second and the batch sizes it ran. B2 runs the three sides in turns, run by run, so that a
machine that speeds up or slows down meanwhile does so for all of them. Every side is timed
alike: from the images' bytes in hand to all their captions back.
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


def caption_inputs(data: bytes) -> dict[str, Any]:
    """One photo's inputs as the worker hands them to the captioner (its bytes already in hand)."""
    from mmq.workers.specialisation_base import ArtifactInput

    return {"image": ArtifactInput(media_type="image/jpeg", sha256="", size=len(data), fetch=lambda: data),
            "max_new_tokens": MAX_NEW_TOKENS}


def caption_batch(captioner: Any, images: list[bytes]) -> list[str]:
    inputs = [caption_inputs(data) for data in images]
    return [out["text"] for out in captioner.run("caption", inputs, lambda done, total: None)]


class DirectLoop:
    """The limit: the model called in this process, in batches of `batch`, no queue at all."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.captioner = load_captioner()

    def run(self, images: list[bytes]) -> dict[int, int]:
        sizes: Counter[int] = Counter()
        for i in range(0, len(images), self.batch):
            sizes[len(images[i:i + self.batch])] += 1
            caption_batch(self.captioner, images[i:i + self.batch])
        return dict(sizes)

    def cpu_s(self) -> float:
        return time.process_time()

    def threads(self) -> int:
        return torch_threads()

    def close(self) -> None:
        pass


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


class RayServe:
    """Ray Serve on this machine: no dashboard, no HTTP proxy, one replica on the same threads."""

    def __init__(self, batch: int) -> None:
        import ray
        from ray import serve

        gpus = 1 if os.environ.get("MMQ_DEVICE") == "cuda" else 0  # bench/gpu.sh: the replica gets the GPU
        ray.init(num_cpus=2, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith(("MMQ_", "HF_"))}})
        serve.start(proxy_location="Disabled")
        deployment = serve.deployment(RayCaptioner, max_ongoing_requests=4 * batch,
                                      ray_actor_options={"num_cpus": 1, "num_gpus": gpus})
        self.handle = serve.run(deployment.bind(batch), name="bench-caption", route_prefix=None)

    def run(self, images: list[bytes]) -> dict[int, int]:
        _through(self.handle, images)
        return {int(k): v for k, v in self.handle.take_sizes.remote().result().items()}

    def cpu_s(self) -> float:
        return self.handle.cpu_s.remote().result()

    def threads(self) -> int:
        return self.handle.threads.remote().result()

    def close(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


def _through(handle: Any, images: list[bytes]) -> list[str]:
    responses = [handle.remote(data) for data in images]  # all at once, as B2 submits to mmq
    return [response.result() for response in responses]


SIDES: dict[str, Callable[[int], Any]] = {"direct": DirectLoop, "ray": RayServe}
RESULT = "RESULT "  # marks the answer lines on stdout, which the libraries may also print to


def main(argv: list[str]) -> int:
    """Load the side once, then, for each line of photo paths (JSON) on stdin, caption them and
    answer with one line: images per second, batch sizes, CPU seconds of the model's process."""
    side = SIDES[argv[0]](int(argv[1]))
    for line in sys.stdin:
        images = [Path(path).read_bytes() for path in json.loads(line)]
        cpu, started = side.cpu_s(), time.perf_counter()  # from the bytes in hand to every caption back
        sizes = side.run(images)
        elapsed = time.perf_counter() - started
        print(RESULT + json.dumps({"rate": len(images) / elapsed, "batches": sizes, "elapsed_s": elapsed,
                                   "cpu_s": side.cpu_s() - cpu, "threads": side.threads()}), flush=True)
    side.close()
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop(asyncio.new_event_loop())
    raise SystemExit(main(sys.argv[1:]))
