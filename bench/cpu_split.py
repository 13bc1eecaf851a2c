"""Where B2's CPU goes: `python -m bench.cpu_split` (not part of `make bench`).

B2 on the tiny model asks mmq for 0.85x of a direct loop on two cores. This measures what each
image costs in CPU on each side: for the direct loop, `prepare` (decode, BLIP processor) and
`infer` (the batched forward pass) in one process; for mmq, every process of the stack over runs of
distinct photos (the worker with its steps' threads, its prepare processes, the client that
uploads and waits, the S3 server, Redis). On N cores a side can do at most N / (CPU seconds per
image) images a second; the direct loop does 1 / (prepare + infer) on one core.
"""

from __future__ import annotations

import os
import time

import psutil

from . import b2
from .harness import MODEL_CACHE, BenchStack
from .peers import caption_inputs, load_captioner
from .photos import photos

JOBS, RUNS = 96, 3


def direct_split(paths: list) -> dict[str, float]:
    """ms of CPU per image in `prepare` and in `infer`, the direct loop's two halves."""
    captioner = load_captioner()
    images = [path.read_bytes() for path in paths]
    captioner.infer("caption", [captioner.prepare("caption", caption_inputs(d)) for d in images[:b2.BATCH]], _quiet)
    started = time.process_time()
    prepared = [captioner.prepare("caption", caption_inputs(data)) for data in images]
    prepare_s = time.process_time() - started
    started = time.process_time()
    for i in range(0, len(prepared), b2.BATCH):
        captioner.infer("caption", prepared[i:i + b2.BATCH], _quiet)
    infer_s = time.process_time() - started
    return {"prepare": prepare_s * 1000 / len(images), "infer": infer_s * 1000 / len(images)}


def _quiet(done: int, total: int) -> None:
    pass


def mmq_split(runs: list[list]) -> dict[str, float]:
    """ms of CPU per image in each process of the mmq stack, over `runs` (the first a warm-up)."""
    serving = {"MMQ_CAPTION_MAX_BATCH": str(b2.BATCH), "MMQ_CAPTION_MAX_WAIT_MS": "20"}
    with BenchStack(**serving) as stack, stack.client() as client:
        worker = stack.start_worker("caption")
        side = b2._MmqSide(stack, client)
        side.run(runs[0])  # the warm-up; then its prepare processes are up
        preparing = [child.pid for child in psutil.Process(worker.pid).children(recursive=True)
                     if "multiprocessing.spawn" in " ".join(child.cmdline())]  # not its resource tracker
        processes = {"worker (Celery, records, S3 reads, model)": [worker.pid],
                     f"its {len(preparing)} prepare processes": preparing,
                     "client (uploads, submission, waiting)": [os.getpid()],
                     "S3 server": [stack.s3.pid], "Redis": [stack.redis.pid]}
        before = {name: _cpu_s(pids) for name, pids in processes.items()}
        started = time.perf_counter()
        for paths in runs[1:]:
            side.run(paths)
        wall_s = time.perf_counter() - started
        images = sum(len(paths) for paths in runs[1:])
        split = {name: (_cpu_s(pids) - before[name]) * 1000 / images for name, pids in processes.items()}
    return {**split, "wall": wall_s * 1000 / images}


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds of these processes, each alone (not its children)."""
    return sum(b2._cpu_s(pid, children=False) for pid in pids)


def main() -> int:
    runs = [photos(JOBS if i else b2.BATCH, MODEL_CACHE / "photos", first_seed=i * JOBS) for i in range(RUNS + 1)]
    os.environ.update({"MMQ_CAPTION_MODEL": "tiny", "MMQ_TORCH_THREADS": "1", "MMQ_DATA_DIR": str(MODEL_CACHE)})
    direct = direct_split(runs[1])
    mmq = mmq_split(runs)
    wall = mmq.pop("wall")
    print(f"direct loop, CPU ms per image: prepare {direct['prepare']:.1f} + infer {direct['infer']:.1f} "
          f"= {sum(direct.values()):.1f} (at most {1000 / sum(direct.values()):.0f} img/s on one core)")
    print("mmq, CPU ms per image: " + ", ".join(f"{name} {ms:.1f}" for name, ms in mmq.items())
          + f" = {sum(mmq.values()):.1f} (at most {2000 / sum(mmq.values()):.0f} img/s on two cores); "
          f"measured {1000 / wall:.0f} img/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
