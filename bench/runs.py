"""B1, B3, B4 and B5 (B2 is bench/b2.py). Each returns rows: what mmq measured, its baseline, their ratio."""

from __future__ import annotations

import base64
import io
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mmq.tasks.records import ENDED_STREAM_GRACE_MS

from .harness import ROOT, BenchStack, sample_image
from .photos import photos
from .rows import NotReal, Row, check_output


def b1_overhead(jobs: int = 60, warmup: int = 5, repeats: int = 5) -> Row:
    """N short caption jobs one after another: through mmq, and as a bare Celery task. Both
    workers are up throughout; the runs alternate (mmq, bare, bare, mmq, mmq, bare), each side's
    figure the median of its runs, so that a machine that drifts moves both alike."""
    image = sample_image().read_bytes()
    with BenchStack() as stack:
        stack.start_worker("caption")
        # The mmq worker's Celery settings that cost time: INFO logging to a file, task events on.
        log = open(stack.logs / "bare-celery.log", "wb")
        bare = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.bare_worker", "worker", "-Q", "bare",
                                 "--concurrency", "1", "--pool", "prefork", "--loglevel", "INFO", "--events"],
                                env=stack.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stack.workers.append(bare)
        os.environ["MMQ_BROKER_URL"] = stack.env["MMQ_BROKER_URL"]  # read by the app's module
        from bench import bare_worker  # the producer side of the same app

        payload = base64.b64encode(image).decode()
        with stack.client() as client:
            ref = client.upload(image).ref
            sides = {"mmq": lambda: client.submit("caption", image=ref, max_new_tokens=10).wait(timeout_s=60),
                     "bare": lambda: bare_worker.caption.apply_async((payload, 10)).get(timeout=120)}
            for one_job in sides.values():
                for _ in range(warmup):
                    one_job()
            runs: dict[str, list[float]] = {name: [] for name in sides}
            for index in range(repeats):
                for name in (list(sides) if index % 2 == 0 else list(sides)[::-1]):
                    started = time.perf_counter()
                    for _ in range(jobs):
                        sides[name]()
                    runs[name].append((time.perf_counter() - started) * 1000 / jobs)
    mmq_ms, bare_ms = statistics.median(runs["mmq"]), statistics.median(runs["bare"])
    ratio = mmq_ms / bare_ms
    shown = {name: ", ".join(f"{ms:.1f}" for ms in taken) for name, taken in runs.items()}
    return Row("B1 overhead", f"{jobs} caption jobs in sequence, per job, median of {repeats}",
               f"{mmq_ms:.1f} ms (runs {shown['mmq']})", f"{bare_ms:.1f} ms (runs {shown['bare']}; bare Celery "
               "apply_async + get)", ratio, f"≤ 1.10× (+{mmq_ms - bare_ms:.1f} ms/job)", ratio <= 1.10)


def b3_hop(size_mb: float = 4.0, repeats: int = 3) -> Row:
    """A three-step chain passing a ~4 MB image by reference: ms per hop, against S3 put + get."""
    from PIL import Image

    side = int((size_mb * 1024 * 1024 / 3) ** 0.5) // 8 * 8
    noise = Image.frombytes("RGB", (side, side), _random_bytes(side * side * 3))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG", compress_level=1)
    data = buffer.getvalue()
    spec = {
        "name": "three-hops",
        "inputs": {"image": {"kind": "image"}},
        "steps": [{"name": f"s{i}", "task": "image2image", "bind": {
            "image": "input.image" if i == 0 else f"s{i - 1}.image", "prompt": "input.prompt",
            "steps": "input.steps", "strength": "input.strength", "seed": "input.seed"}} for i in range(3)],
        "outputs": {"image": "s2.image"},
    }
    spec["inputs"].update({"prompt": {"kind": "text", "default": "noise"},
                           "steps": {"kind": "integer", "default": 2},
                           "strength": {"kind": "number", "default": 0.5},
                           # A new seed each run: new images, so every hop really stores and fetches
                           # (an image stored before would be found and not written again).
                           "seed": {"kind": "integer", "default": 0}})
    hops: list[float] = []
    stored: list[str] = []
    with BenchStack() as stack:
        stack.start_worker("diffusion")
        with stack.client() as client:
            ref = client.upload(data).ref
            client.submit_pipeline(spec, image=ref).wait(timeout_s=600)  # warm-up
            for seed in range(1, repeats + 1):
                record = client.submit_pipeline(spec, image=ref, seed=seed).wait(timeout_s=600)
                states = [record.step_states[f"s{i}"] for i in range(3)]
                stored.extend(state.outputs["image"]["sha256"] for state in states)
                for before, after in zip(states, states[1:]):
                    hops.append((after.started_at - before.finished_at + before.store_s + after.fetch_s) * 1000)
            # Every hop measured must have stored a new image: one found already stored (content
            # addressing) skips the upload and would make a hop look cheaper than it is.
            if len(set(stored)) != len(stored):
                raise NotReal(f"B3: only {len(set(stored))} of {len(stored)} step outputs were new images")
            store = client.transport.store
            out_size = record.outputs["image"]["size"]
            round_trips = []
            for _ in range(repeats * 2):
                blob = _random_bytes(out_size)
                started = time.perf_counter()
                stored = store.put_bytes(blob, "application/octet-stream")
                store.get_bytes(stored)
                round_trips.append((time.perf_counter() - started) * 1000)
    hop_ms, s3_ms = statistics.median(hops), statistics.median(round_trips)
    return Row("B3 hop", f"3-step image2image chain, {out_size / 1e6:.1f} MB PNG by reference, per hop",
               f"{hop_ms:.1f} ms", f"{s3_ms:.1f} ms (S3 put + get of the same size)", hop_ms / s3_ms, "—", None)


def _random_bytes(count: int) -> bytes:
    return os.urandom(count)


def b4_submission(jobs: int = 100_000, chunk: int = 1000) -> list[Row]:
    """Bulk submission from one client, and Redis memory per queued job, with nobody consuming."""
    with BenchStack() as stack:
        redis = stack.redis_client()
        with stack.client() as client:
            ref = client.upload(sample_image().read_bytes()).ref
            client.submit_many("caption", [{"image": ref}] * 100)  # warm-up: connections, scripts
            redis.flushdb()
            before = redis.info("memory")["used_memory"]
            started = time.perf_counter()
            for _ in range(jobs // chunk):
                client.submit_many("caption", [{"image": ref}] * chunk)
            rate = jobs / (time.perf_counter() - started)
            per_job = (redis.info("memory")["used_memory"] - before) / jobs
            queued = redis.llen("caption")
    return [
        Row("B4 submission", f"{jobs:,} caption jobs, submit_many in chunks of {chunk}", f"{rate:,.0f} jobs/s",
            "5,000 jobs/s (target)", rate / 5000, "≥ 5,000 jobs/s", rate >= 5000),
        Row("B4 memory", f"Redis memory per queued job, {queued:,} queued", f"{per_job:,.0f} B",
            "2,048 B (target)", per_job / 2048, "≤ 2 KB", per_job <= 2048),
    ]


def b4b_finished_memory(jobs: int = 300, warmup: int = 32) -> Row:
    """Redis bytes a FINISHED job leaves behind (record, events, results, anything Celery keeps),
    measured as used_memory after `jobs` finished minus before, and split by key pattern."""
    with BenchStack(MMQ_CAPTION_MAX_BATCH="16") as stack:
        stack.start_worker("caption")
        redis = stack.redis_client()
        with stack.client() as client:
            ref = client.upload(sample_image().read_bytes()).ref
            for job in client.submit_many("caption", [{"image": ref, "max_new_tokens": 5}] * warmup):
                job.wait(timeout_s=120)  # stats hashes, scripts, connections: there before we count
            time.sleep(1)
            sizes_before, before = _memory_by_pattern(redis), redis.info("memory")["used_memory"]
            done = [job.wait(timeout_s=600) for job in
                    client.submit_many("caption", [{"image": ref, "max_new_tokens": 5}] * jobs)]
            for record in done:
                check_output("caption", record, client)
            # The last events and acknowledgements land, and the finished jobs' streams expire (a
            # stream outlives its job's end by ENDED_STREAM_GRACE_MS, for readers blocked on it).
            time.sleep(1 + ENDED_STREAM_GRACE_MS / 1000)
            per_job = (redis.info("memory")["used_memory"] - before) / jobs
            grown = {pattern: size - sizes_before.get(pattern, 0)
                     for pattern, size in _memory_by_pattern(redis).items()}
    notes = ["B4b growth of MEMORY USAGE by key pattern, per finished job: " + ", ".join(
        f"{pattern} {size / jobs:,.0f} B" for pattern, size in sorted(grown.items(), key=lambda kv: -kv[1])
        if size)]
    return Row("B4b finished memory", f"Redis memory kept per finished caption job, {jobs} finished",
               f"{per_job:,.0f} B", "3,072 B (target)", per_job / 3072, "≤ 3 KB", per_job <= 3072, notes)


def _memory_by_pattern(redis: Any) -> dict[str, int]:
    """MEMORY USAGE of every key, summed by key with any id in it (a job's, a Celery task's) as `{id}`."""
    totals: dict[str, int] = {}
    for key in redis.scan_iter(count=1000):
        pattern = ID.sub("{id}", key.decode(errors="replace"))
        totals[pattern] = totals.get(pattern, 0) + (redis.memory_usage(key, samples=0) or 0)
    return totals


ID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|[0-9a-zA-Z_-]{16,}")


COLD_START_BUDGET_S = 240  # bench/gpu.sh must fit the few minutes a borrowed GPU is held


COLD_START_SLACK_S = 1.5  # the target: a worker's first job within this of a bare process's


def b5_cold_start(specialisations: tuple[str, ...] = ("caption",)) -> list[Row]:
    """Worker start to first job done, against a bare process that imports, loads and runs the same
    model once (bench/bare_run.py), both started cold with the same environment."""
    first_jobs = {"caption": ("caption", {}), "diffusion": ("text2image", {"prompt": "a lighthouse", "steps": 20})}
    [image] = photos(1, ROOT / ".mmq" / "bench" / "photos", first_seed=99_999)
    rows = []
    for name in specialisations:
        task, inputs = first_jobs[name]
        with BenchStack() as stack:
            _bare_process_s(stack, name, task, image if task == "caption" else None)  # page cache warm
            bare_s = _bare_process_s(stack, name, task, image if task == "caption" else None)
            with stack.client() as client:
                if task == "caption":
                    inputs = {"image": client.upload(image.read_bytes()).ref, "max_new_tokens": 20}
                job = client.submit(task, **inputs)  # waiting before the worker exists
                started = time.perf_counter()
                stack.start_worker(name, wait=False)
                record = job.wait(timeout_s=COLD_START_BUDGET_S)
                cold_s = time.perf_counter() - started
                check_output(task, record, client)
        model = "tiny model" if not os.environ.get("MMQ_BENCH_MODELS") else os.environ.get(
            f"MMQ_{name.upper()}_MODEL", "?")
        rows.append(Row(f"B5 cold start ({name})", f"{name} worker start to first {task} done ({model})",
                        f"{cold_s:.2f} s", f"{bare_s:.2f} s (bare process: import, load, run once)",
                        cold_s / bare_s, f"≤ bare + {COLD_START_SLACK_S} s (+{cold_s - bare_s:.2f} s)",
                        cold_s <= bare_s + COLD_START_SLACK_S))
    return rows


def _bare_process_s(stack: BenchStack, name: str, task: str, image: Path | None) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench.bare_run", name, task, str(image) if image else "-"],
                   env={**stack.env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, check=True, capture_output=True,
                   timeout=COLD_START_BUDGET_S)
    return time.perf_counter() - started
