"""The five benchmarks. Each returns a `Row`: what mmq measured, its baseline, their ratio."""

from __future__ import annotations

import base64
import io
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from .harness import BenchStack, caption_model, model_settings, real_models, sample_image


@dataclass
class Row:
    name: str
    what: str
    mmq: str
    baseline: str
    ratio: float
    target: str
    met: bool | None  # None: no target

    def markdown(self) -> str:
        verdict = "" if self.met is None else (" ✓" if self.met else " ✗")
        return (f"| {self.name} | {self.what} | {self.mmq} | {self.baseline} | {self.ratio:.2f}× | "
                f"{self.target}{verdict} |")


def b1_overhead(jobs: int = 100, warmup: int = 5) -> Row:
    """N short caption jobs one after another: through mmq, and as a bare Celery task."""
    image = sample_image().read_bytes()
    with BenchStack() as stack:
        stack.start_worker("caption")
        with stack.client() as client:
            ref = client.upload(image).ref
            for _ in range(warmup):
                client.submit("caption", image=ref, max_new_tokens=10).wait(timeout_s=60)
            started = time.perf_counter()
            for _ in range(jobs):
                client.submit("caption", image=ref, max_new_tokens=10).wait(timeout_s=60)
            mmq_ms = (time.perf_counter() - started) * 1000 / jobs
        stack.stop_workers()

        bare = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.bare_worker", "worker", "-Q", "bare",
                                 "--concurrency", "1", "--pool", "prefork", "--loglevel", "WARNING"],
                                env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        stack.workers.append(bare)
        os.environ["MMQ_BROKER_URL"] = stack.env["MMQ_BROKER_URL"]  # read by the app's module
        from bench import bare_worker  # the producer side of the same app

        payload = base64.b64encode(image).decode()
        for _ in range(warmup):
            bare_worker.caption.apply_async((payload, 10)).get(timeout=120)
        started = time.perf_counter()
        for _ in range(jobs):
            bare_worker.caption.apply_async((payload, 10)).get(timeout=60)
        bare_ms = (time.perf_counter() - started) * 1000 / jobs
    ratio = mmq_ms / bare_ms
    return Row("B1 overhead", f"{jobs} caption jobs in sequence, per job", f"{mmq_ms:.1f} ms",
               f"{bare_ms:.1f} ms (bare Celery apply_async + get)", ratio,
               f"≤ 1.10× (+{mmq_ms - bare_ms:.1f} ms/job)", ratio <= 1.10)


def b2_batching(jobs: int = 64, batch: int = 8) -> list[Row]:
    """caption throughput: mmq batching, mmq one at a time, and an in-process loop of batches."""
    image = sample_image()
    throughput = {}
    for label, env in (("batching", {"MMQ_CAPTION_MAX_BATCH": str(batch), "MMQ_CAPTION_MAX_WAIT_MS": "20"}),
                       ("one at a time", {})):
        with BenchStack(**env) as stack:
            stack.start_worker("caption")
            with stack.client() as client:
                ref = client.upload(image).ref
                for job in client.submit_many("caption", [{"image": ref, "max_new_tokens": 20}] * batch):
                    job.wait(timeout_s=120)  # warm-up
                started = time.perf_counter()
                done = [job.wait(timeout_s=300) for job in
                        client.submit_many("caption", [{"image": ref, "max_new_tokens": 20}] * jobs)]
                throughput[label] = jobs / (time.perf_counter() - started)
                for record in done:
                    check_output("caption", record, client)
    throughput["direct"] = _direct_caption_loop(jobs, batch, caption_model())
    rows = []
    for label in ("batching", "one at a time"):
        ratio = throughput[label] / throughput["direct"]
        rows.append(Row(f"B2 batching ({label})", f"{jobs} caption jobs, max_batch {batch if label == 'batching' else 1}",
                        f"{throughput[label]:.1f} jobs/s", f"{throughput['direct']:.1f} jobs/s (in-process "
                        f"loop, batches of {batch})", ratio, "≥ 0.90×" if label == "batching" else "—",
                        ratio >= 0.90 if label == "batching" else None))
    return rows


class NotReal(AssertionError):
    """A benchmark's output is not what a working model gives: it must not be counted."""


def check_output(task: str, record, client) -> None:
    """A job's output is real, not merely present: with real models, a caption that says
    something, an image that is neither one colour nor NaN (which PNG writes as black)."""
    if record.status.value != "succeeded":
        raise NotReal(f"{task} job {record.id} {record.status.value}: {record.error}")
    if not real_models():
        return  # tiny random models: their outputs are noise by design
    if task == "caption" and not record.outputs["text"].strip():
        raise NotReal(f"caption job {record.id} gave an empty caption")
    if task == "text2image":
        import numpy as np
        from PIL import Image

        pixels = np.asarray(Image.open(io.BytesIO(client.job(record.id).outputs["image"].read())), dtype=float)
        if not np.isfinite(pixels).all() or pixels.std() == 0:
            raise NotReal(f"text2image job {record.id} gave a {pixels.shape} image of one colour")


def _direct_caption_loop(jobs: int, batch: int, model_id: str) -> float:
    """The limit: the same model called in this process, batches of `batch`, no queue at all."""
    code = f"""
import time, torch
torch.set_num_threads(1)
from mmq.tasks.settings import Settings
from mmq.workers.caption import CaptionSpecialisation
from mmq.workers.devices import pick_device
from mmq.workers.specialisation_base import ArtifactInput, ModelContext
from bench.harness import MODEL_CACHE, sample_image
data = sample_image().read_bytes()
settings = Settings.from_env({{"MMQ_DATA_DIR": str(MODEL_CACHE)}})
model = CaptionSpecialisation(ModelContext(model={model_id!r}, device=pick_device(), cache_dir=MODEL_CACHE / "models",
                                           settings=settings))
model.setup()
def one_batch():
    inputs = [{{"image": ArtifactInput(media_type="image/png", sha256="", size=len(data), fetch=lambda: data),
               "max_new_tokens": 20}} for _ in range({batch})]
    outputs = model.run("caption", inputs, lambda d, t: None)
    assert {real_models()!r} is False or all(o["text"].strip() for o in outputs), "an empty caption"
one_batch()
started = time.perf_counter()
for _ in range({jobs} // {batch}):
    one_batch()
print({jobs} / (time.perf_counter() - started))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMQ_", "AWS_"))}
    env.update(model_settings())  # the same checkpoint and device as the workers
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(result.stdout.strip().splitlines()[-1])


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
    hops = []
    with BenchStack() as stack:
        stack.start_worker("diffusion")
        with stack.client() as client:
            ref = client.upload(data).ref
            client.submit_pipeline(spec, image=ref).wait(timeout_s=600)  # warm-up
            for seed in range(1, repeats + 1):
                record = client.submit_pipeline(spec, image=ref, seed=seed).wait(timeout_s=600)
                states = [record.step_states[f"s{i}"] for i in range(3)]
                for before, after in zip(states, states[1:]):
                    hops.append((after.started_at - before.finished_at + before.store_s + after.fetch_s) * 1000)
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


COLD_START_BUDGET_S = 240  # bench/gpu.sh must fit the few minutes a borrowed GPU is held


def b5_cold_start(specialisations: tuple[str, ...] = ("caption",)) -> list[Row]:
    """Worker start to first job done, against the model load time alone."""
    import json

    first_jobs = {"caption": ("caption", {}), "diffusion": ("text2image", {"prompt": "a lighthouse", "steps": 20})}
    rows = []
    for name in specialisations:
        task, inputs = first_jobs[name]
        with BenchStack() as stack:
            with stack.client() as client:
                if task == "caption":
                    inputs = {"image": client.upload(sample_image().read_bytes()).ref}
                job = client.submit(task, **inputs)  # waiting before the worker exists
                started = time.perf_counter()
                worker = stack.start_worker(name, wait=False)
                record = job.wait(timeout_s=COLD_START_BUDGET_S)
                cold_s = time.perf_counter() - started
                check_output(task, record, client)
                load_s = json.loads(stack.redis_client().get(stack.heartbeat_key(name, worker)))["load_s"]
        model = "tiny model" if not os.environ.get("MMQ_BENCH_MODELS") else os.environ.get(
            f"MMQ_{name.upper()}_MODEL", "?")
        rows.append(Row(f"B5 cold start ({name})", f"{name} worker start to first {task} done ({model})",
                        f"{cold_s:.2f} s", f"{load_s:.2f} s (model load alone)", cold_s / load_s, "—", None))
    return rows
