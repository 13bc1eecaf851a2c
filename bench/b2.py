"""B2: caption throughput of mmq with dynamic batching, against Ray Serve with `@serve.batch` and
a direct in-process loop: the same model, the same distinct photos, the same batch size and torch
threads, in one stack (Redis, SeaweedFS, the idle mmq worker beside the others), their runs taken
in turns, in two phases each with the direct loop as its yardstick."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mmq.tasks.stats import read_batches

from .dominant_blip import build_dominant_blip
from .harness import MODEL_CACHE, ROOT, BenchStack, real_models
from .peers import MAX_NEW_TOKENS, MAX_WAIT_S, RESULT
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
    label = f"BLIP {Path(os.environ['MMQ_CAPTION_MODEL']).name}" if real_models() else "tiny BLIP"
    rows = _compare(label, None, jobs, first_seed=0)
    if not real_models():  # bench/gpu.sh's real checkpoint is already a model that dominates
        rows += _compare("BLIP ~8 M params, 224 px", build_dominant_blip, jobs, first_seed=10_000)
    return rows


def b2_peers() -> tuple[str, ...]:
    """`MMQ_BENCH_B2_PEERS`: the sides beside mmq, `direct,ray` unless told (a GPU machine without
    Ray installed runs `direct` alone); the direct loop is always one of them."""
    chosen = tuple(p.strip() for p in os.environ.get("MMQ_BENCH_B2_PEERS", "direct,ray").split(",") if p.strip())
    unknown = set(chosen) - {"direct", "ray"}
    if unknown or "direct" not in chosen:
        raise SystemExit(f"MMQ_BENCH_B2_PEERS: 'direct' or 'direct,ray', got {','.join(chosen)!r}")
    return chosen


def _compare(label: str, build, jobs: int, *, first_seed: int) -> list[Row]:
    runs = [photos(jobs if i else BATCH, MODEL_CACHE / "photos", first_seed=first_seed + i * jobs)
            for i in range(REPEATS + 1)]  # a warm-up run, then REPEATS runs of new photos each
    serving = {"MMQ_CAPTION_MAX_BATCH": str(BATCH), "MMQ_CAPTION_MAX_WAIT_MS": str(int(MAX_WAIT_S * 1000))}
    with BenchStack(**serving) as stack:
        if build is not None:
            stack.env["MMQ_CAPTION_MODEL"] = str(build(Path(stack.logs) / "blip-dominant"))
        stack.start_worker("caption")
        # Two phases, each with the direct loop as its yardstick: mmq's turns and the direct loop's,
        # then Ray's and the direct loop's. Ray's processes are up only for its own phase: idle, they
        # took enough of two cores to cost mmq's many processes 5% (0.99x the direct loop with Ray
        # up and idle, 1.04x before it started, 1.07x after it stopped, on one stack).
        with stack.client() as client, _Peer(stack, "direct") as direct:
            phases = {"mmq": _turns({"mmq": _MmqSide(stack, client), "direct": direct}, runs)}
            if "ray" in b2_peers():
                with _Peer(stack, "ray") as ray:
                    phases["ray"] = _turns({"ray": ray, "direct": direct}, runs)
    size = sum(p.stat().st_size for p in runs[1]) / len(runs[1]) / 1000
    what = f"{jobs} distinct {size:.0f} KB photos, batch {BATCH}, median of {REPEATS}"
    mmq, direct = _side("mmq", phases["mmq"]["mmq"]), _side("direct loop", phases["mmq"]["direct"])
    target = 0.95 if build is not None else 0.85
    to_direct = mmq.median / direct.median
    rows = [Row(f"B2 {label} vs direct", what, mmq.cell(), f"{direct.cell()} direct loop", to_direct,
                f"≥ {target:.2f}×", to_direct >= target, [f"B2 {label}: {mmq.note()}", f"B2 {label}: {direct.note()}"])]
    if "ray" in phases:
        ray, yardstick = _side("Ray Serve", phases["ray"]["ray"]), _side("direct loop", phases["ray"]["direct"])
        # Each against the direct loop of its own phase, so that a machine that drifts between the
        # phases moves neither: (mmq / direct) / (Ray / direct).
        to_ray = to_direct / (ray.median / yardstick.median)
        rows.append(Row(f"B2 {label} vs Ray Serve", f"{what}; each / the direct loop of its phase", mmq.cell(),
                        f"{ray.cell()} Ray Serve @serve.batch (its phase's direct loop {yardstick.median:.1f})",
                        to_ray, "> 1.00× (ahead)" if build is None else "—", to_ray > 1.0 if build is None else None,
                        [f"B2 {label}: {ray.note()}", f"B2 {label}, Ray's phase: {yardstick.note()}"]))
    return rows


def _turns(sides: dict, runs: list[list[Path]]) -> dict[str, list[dict]]:
    """Every side runs every run's photos, in turns (a new order each time), so that a shared
    machine that speeds up or slows down does so for all of them alike; the first run warms up."""
    order = list(sides)
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for index, paths in enumerate(runs):
        for name in order[index % len(order):] + order[:index % len(order)]:
            results[name].append(sides[name].run(paths))
    return {name: taken[1:] for name, taken in results.items()}  # [0]: the warm-up


def _side(name: str, runs: list[dict]) -> Side:
    batches: Counter[int] = Counter()
    for run in runs:
        batches.update({int(size): count for size, count in run["batches"].items()})
    cores = sum(run["cpu_s"] for run in runs) / sum(run["elapsed_s"] for run in runs)
    return Side(name, [run["rate"] for run in runs], dict(batches), runs[-1].get("threads"), cores)


class _MmqSide:
    """mmq's runs: each run's photos submitted at once (bytes in hand: the client uploads them),
    then every job waited on; batch sizes from the worker's statistics in Redis."""

    def __init__(self, stack: BenchStack, client) -> None:
        self.stack, self.client, self.redis = stack, client, stack.redis_client()
        self.warm = False

    def run(self, paths: list[Path]) -> dict:
        if not self.warm:  # the warm-up run: its batches start the worker's prepare processes
            self.warm = True
            result = self._run(paths)
            self.stack.await_prepare_processes("caption")
            return result
        return self._run(paths)

    def _run(self, paths: list[Path]) -> dict:
        import time

        images = [path.read_bytes() for path in paths]
        before = Counter(read_batches(self.redis).get("caption", {}).get("sizes", {}))
        cpu, started = _cpu_s(self.stack.workers[0].pid), time.perf_counter()
        jobs = self.client.submit_many("caption", [{"image": data, "max_new_tokens": MAX_NEW_TOKENS}
                                                   for data in images])
        records = [job.wait(timeout_s=600) for job in jobs]
        elapsed = time.perf_counter() - started
        cpu_s = _cpu_s(self.stack.workers[0].pid) - cpu
        for record in records:
            check_output("caption", record, self.client)
        batches = Counter(read_batches(self.redis).get("caption", {}).get("sizes", {})) - before
        return {"rate": len(images) / elapsed, "batches": dict(batches), "elapsed_s": elapsed, "cpu_s": cpu_s}


def _cpu_s(pid: int, *, children: bool = True) -> float:
    """CPU seconds of a process and (by default) its children: the worker (where the model runs)
    with its prepare processes."""
    import psutil

    process = psutil.Process(pid)
    processes = [process, *(process.children(recursive=True) if children else [])]
    return sum(p.cpu_times().user + p.cpu_times().system for p in processes)


class _Peer:
    """One of the other two sides, in its own process (bench/peers.py), its model loaded once."""

    def __init__(self, stack: BenchStack, side: str) -> None:
        env = {**stack.env, "PYTHONPATH": str(ROOT)}  # the worker's: its model, threads, data folder
        self.side, self.log = side, Path(stack.logs) / f"peer-{side}.log"
        self.process = subprocess.Popen([sys.executable, "-m", "bench.peers", side, str(BATCH)], env=env,
                                        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log.open("wb"), text=True)

    def run(self, paths: list[Path]) -> dict:
        self.process.stdin.write(json.dumps([str(path) for path in paths]) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(RESULT):
                return json.loads(line[len(RESULT):])
        raise RuntimeError(f"B2 {self.side} side failed:\n{self.log.read_text()[-3000:]}")

    def __enter__(self) -> _Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
