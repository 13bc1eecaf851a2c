"""What only a GPU can show, through real workers on the embedded stack (bench/gpu_checks.sh runs
these after the test files): `python -m bench.gpu_checks oom|prepare`. Each prints what it saw and
exits 1 when a check fails.

- oom: a real CUDA out-of-memory. This process takes all but 160 MiB of the GPU's free memory, then
  a diffusion worker is asked for a 2048x2048 image: its step must fail as `OutOfMemory` naming width
  and height after one more try, and the 64x64 job after it must succeed on the same worker.
- prepare: a batching caption worker on CUDA keeps its prepare processes off the GPU (they hold the
  processor only): none of them may be a CUDA process (`nvidia-smi`) or have the CUDA driver mapped,
  while the process that runs the model is and has.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from mmq.tasks import JobStatus, Settings, heartbeats
from mmq.tasks.stats import read_batches

from .harness import MODEL_CACHE, BenchStack
from .photos import photos

LEFT_FREE = 160 * 2**20  # enough for a 64x64 image of the tiny model, far from a 2048x2048 one


def check_out_of_memory() -> list[str]:
    import torch

    failures = []
    with BenchStack() as stack:
        stack.start_worker("diffusion", MMQ_DEVICE="cuda")
        client = stack.client()
        warm = client.submit("text2image", prompt="warm up", width=64, height=64, steps=2).wait(timeout_s=300)
        _expect(warm.status is JobStatus.SUCCEEDED, f"warm-up 64x64: {warm.status} {warm.error}", failures)
        free, total = torch.cuda.mem_get_info()
        hog = torch.empty(free - LEFT_FREE, dtype=torch.uint8, device="cuda")
        print(f"oom: took {hog.numel() / 2**30:.1f} GiB of {total / 2**30:.1f} GiB, left "
              f"{torch.cuda.mem_get_info()[0] / 2**20:.0f} MiB free", flush=True)
        big = client.submit("text2image", prompt="a large house", width=2048, height=2048, steps=2).wait(timeout_s=300)
        small = client.submit("text2image", prompt="a small house", width=64, height=64, steps=2).wait(timeout_s=300)
        del hog
        log = _worker_logs(stack)
    print(f"oom: big -> {big.status.value}: {big.error}", flush=True)
    print(f"oom: small after it -> {small.status.value}: {small.error}", flush=True)
    _expect(big.status is JobStatus.FAILED and (big.error or {}).get("type") == "OutOfMemory",
            "the 2048x2048 step did not fail as OutOfMemory", failures)
    message = (big.error or {}).get("message", "")
    _expect("on cuda" in message and message.endswith("lower width (2048), height (2048)"),
            f"the OutOfMemory message does not name cuda and the inputs: {message!r}", failures)
    _expect("freeing memory and trying once more" in log, "the worker did not free memory and try once more",
            failures)
    _expect(small.status is JobStatus.SUCCEEDED, "the 64x64 job after the out-of-memory did not succeed", failures)
    return failures


def check_prepare_processes_stay_off_the_gpu() -> list[str]:
    failures = []
    serving = {"MMQ_CAPTION_MAX_BATCH": "16", "MMQ_CAPTION_MAX_WAIT_MS": "20"}
    with BenchStack(**serving) as stack:
        worker = stack.start_worker("caption", MMQ_DEVICE=os.environ.get("MMQ_GPU_CHECKS_DEVICE", "cuda"))
        redis, wanted = stack.redis_client(), Settings.from_env(stack.env).serving_for("caption").prepare_processes
        with stack.client() as client:
            for run in range(3):  # the first run's batches start the prepare processes
                images = [p.read_bytes() for p in photos(48, MODEL_CACHE / "photos", first_seed=50_000 + 48 * run)]
                records = [job.wait(timeout_s=300) for job in client.submit_many("caption", [{"image": d} for d in images])]
                _expect(all(r.status is JobStatus.SUCCEEDED for r in records),
                        f"run {run}: {[r.error for r in records if r.status is not JobStatus.SUCCEEDED][:2]}", failures)
                if run == 0:
                    stack.await_prepare_processes("caption")
        beat = next(w for w in heartbeats.workers(redis) if w["specialisation"] == "caption")
        tree = psutil.Process(worker.pid).children(recursive=True)
        preparing = [p for p in tree if "spawn_main" in " ".join(p.cmdline())]
        # The model's process: the worker itself where it batches (a thread pool), else its pool process.
        pool = [psutil.Process(worker.pid), *(p for p in tree if p not in preparing
                                               and "resource_tracker" not in " ".join(p.cmdline()))]
        on_gpu = _cuda_pids()
        print(f"prepare: worker {worker.pid}: " + "; ".join(f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in tree), flush=True)
        print(f"prepare: heartbeat device={beat.get('device')} gpu={beat.get('gpu_name')} "
              f"prepare_processes={beat.get('prepare_processes')}; batches "
              f"{read_batches(redis).get('caption', {}).get('sizes')}", flush=True)
        for role, processes in (("model", pool), ("prepare", preparing)):
            for process in processes:
                print(f"prepare: {role} pid {process.pid}: nvidia-smi lists it: {process.pid in on_gpu}; "
                      f"CUDA driver mapped: {_maps_cuda(process.pid)}; rss {process.memory_info().rss >> 20} MiB",
                      flush=True)
    _expect(len(preparing) == wanted, f"{len(preparing)} prepare processes, {wanted} wanted", failures)
    _expect(not any(p.pid in on_gpu or _maps_cuda(p.pid) for p in preparing),
            "a prepare process initialised CUDA", failures)
    _expect(any(_maps_cuda(p.pid) for p in pool), "the model's process has no CUDA: the model did not run on the GPU",
            failures)
    return failures


def _cuda_pids() -> set[int]:
    try:
        listed = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                                capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:  # no NVIDIA driver: no CUDA process either
        return set()
    return {int(line) for line in listed.split() if line.strip().isdigit()}


def _maps_cuda(pid: int) -> bool:
    """Whether the process has the CUDA driver library loaded (what initialising CUDA does)."""
    try:
        return "libcuda.so" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _worker_logs(stack: BenchStack) -> str:
    return "\n".join(path.read_text(errors="replace") for path in Path(stack.logs).glob("worker-*.log"))


def _expect(condition: bool, failure: str, failures: list[str]) -> None:
    if not condition:
        failures.append(failure)


CHECKS = {"oom": check_out_of_memory, "prepare": check_prepare_processes_stay_off_the_gpu}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in CHECKS:
        print(f"usage: python -m bench.gpu_checks {{{'|'.join(CHECKS)}}}", file=sys.stderr)
        return 2
    failures = CHECKS[argv[0]]()
    for failure in failures:
        print(f"{argv[0]}: FAILED: {failure}", flush=True)
    print(f"{argv[0]}: {'passed' if not failures else 'failed'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
