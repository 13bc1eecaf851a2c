"""B2: caption throughput of mmq with dynamic batching, against Ray Serve with `@serve.batch` and
a direct in-process loop: the same model, the same distinct photos, the same batch size and torch
threads, all three in one stack (Redis, SeaweedFS, the idle mmq worker beside the other two)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mmq.tasks.stats import read_batches

from .dominant_blip import build_dominant_blip
from .harness import MODEL_CACHE, ROOT, BenchStack, real_models
from .peers import MAX_NEW_TOKENS, MAX_WAIT_S
from .photos import photos
from .rows import Row, check_output

BATCH = 16
REPEATS = 3  # each side's figure is the median of this many runs, each on photos of its own


@dataclass
class Side:
    """One side's runs: images per second of each, and the batch sizes it ran (size: count)."""

    name: str
    rates: list[float]
    batches: dict[int, int]
    threads: int | None = None  # torch's intra-op threads where the model ran (MMQ_TORCH_THREADS)
    cores: float | None = None  # CPU seconds per second of the model's process over the timed runs

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def cell(self) -> str:
        runs = ", ".join(f"{rate:.1f}" for rate in self.rates)
        return f"{self.median:.1f} img/s (runs {runs}; mean batch {mean_batch(self.batches):.1f})"

    def note(self) -> str:
        threads = "" if self.threads is None else f"; {self.threads} torch thread(s)"
        threads += "" if self.cores is None else f"; model process busy {self.cores:.2f} cores"
        return (f"{self.name}: runs {', '.join(f'{r:.1f}' for r in self.rates)} img/s; "
                f"batches {histogram(self.batches)}{threads}")


def mean_batch(batches: dict[int, int]) -> float:
    count = sum(batches.values())
    return sum(size * n for size, n in batches.items()) / count if count else 0.0


def histogram(batches: dict[int, int]) -> str:
    """`16×5, 8×1 (mean 14.7)`: how many batches of each size, largest first."""
    if not batches:
        return "none"
    sizes = ", ".join(f"{size}×{count}" for size, count in sorted(batches.items(), reverse=True))
    return f"{sizes} (mean {mean_batch(batches):.1f})"


def b2_batching(jobs: int = 96) -> list[Row]:
    """The tiny BLIP of the tests (per-job costs dominate), then one whose forward pass dominates."""
    rows = _compare("tiny BLIP", None, jobs, first_seed=0)
    if not real_models():  # bench/gpu.sh's real checkpoint is already a model that dominates
        rows += _compare("BLIP ~8 M params, 224 px", build_dominant_blip, jobs // 2, first_seed=10_000)
    return rows


def _compare(label: str, build, jobs: int, *, first_seed: int) -> list[Row]:
    runs = [photos(jobs if i else BATCH, MODEL_CACHE / "photos", first_seed=first_seed + i * jobs)
            for i in range(REPEATS + 1)]  # a warm-up run, then REPEATS runs of new photos each
    serving = {"MMQ_CAPTION_MAX_BATCH": str(BATCH), "MMQ_CAPTION_MAX_WAIT_MS": str(int(MAX_WAIT_S * 1000))}
    with BenchStack(**serving) as stack:
        if build is not None:
            stack.env["MMQ_CAPTION_MODEL"] = str(build(Path(stack.logs) / "blip-dominant"))
        stack.start_worker("caption")
        mmq = _mmq_runs(stack, runs)
        # The peers run while the mmq stack is up and idle beside them, as it is beside mmq.
        direct = _peer_runs(stack, "direct", runs)
        ray = _peer_runs(stack, "ray", runs)
    size = sum(p.stat().st_size for p in runs[1]) / len(runs[1]) / 1000
    what = f"{jobs} distinct {size:.0f} KB photos, batch {BATCH}, median of {REPEATS}"
    notes = [f"B2 {label}: {side.note()}" for side in (mmq, ray, direct)]
    to_direct, to_ray = mmq.median / direct.median, mmq.median / ray.median
    target = 0.95 if build is not None else 0.85
    return [
        Row(f"B2 {label} vs direct", what, mmq.cell(), f"{direct.cell()} direct loop", to_direct,
            f"≥ {target:.2f}×", to_direct >= target, notes),
        Row(f"B2 {label} vs Ray Serve", what, mmq.cell(), f"{ray.cell()} Ray Serve @serve.batch", to_ray,
            "> 1.00× (ahead)" if build is None else "—", to_ray > 1.0 if build is None else None),
    ]


def _mmq_runs(stack: BenchStack, runs: list[list[Path]]) -> Side:
    """Submit each run's photos at once (bytes in hand: the client uploads them) and wait for all."""
    import time

    redis = stack.redis_client()
    rates, batches, busy_s, timed_s = [], Counter(), 0.0, 0.0
    with stack.client() as client:
        for index, paths in enumerate(runs):
            images = [path.read_bytes() for path in paths]
            before = Counter(read_batches(redis).get("caption", {}).get("sizes", {}))
            cpu, started = _cpu_s(stack.workers[0].pid), time.perf_counter()
            jobs = client.submit_many("caption", [{"image": data, "max_new_tokens": MAX_NEW_TOKENS}
                                                  for data in images])
            records = [job.wait(timeout_s=600) for job in jobs]
            elapsed = time.perf_counter() - started
            for record in records:
                check_output("caption", record, client)
            if index:  # run 0 is the warm-up
                busy_s, timed_s = busy_s + _cpu_s(stack.workers[0].pid) - cpu, timed_s + elapsed
                rates.append(len(images) / elapsed)
                batches.update(Counter(read_batches(redis).get("caption", {}).get("sizes", {})) - before)
    return Side("mmq", rates, dict(batches), cores=busy_s / timed_s)


def _cpu_s(pid: int) -> float:
    """CPU seconds of the worker process and its pool children (where the model runs)."""
    import psutil

    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(p.cpu_times().user + p.cpu_times().system for p in processes)


def _peer_runs(stack: BenchStack, side: str, runs: list[list[Path]]) -> Side:
    args = [str(path) for paths in runs for path in [*paths, "--"]][:-1]
    env = {**stack.env, "PYTHONPATH": str(ROOT)}  # the worker's: its model, threads, data folder
    result = subprocess.run([sys.executable, "-m", "bench.peers", side, str(BATCH), *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"B2 {side} side failed:\n{result.stderr[-3000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return Side({"ray": "Ray Serve", "direct": "direct loop"}[side], out["rates"],
                {int(k): v for k, v in out["batches"].items()}, out["threads"], out["cores"])
