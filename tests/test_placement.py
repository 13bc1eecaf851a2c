"""Which worker goes on which GPU: the plan as a pure function over GPU inventories, the GPUs a
scheduler's CUDA_VISIBLE_DEVICES leaves us, and `mmq up` starting workers where the plan says.

Faked for the last test only: the GPUs (none here). A `nvidia-smi` written by the test stands in
for the driver's, listing four GPUs; the workers it pins then find no CUDA and run on the CPU,
which is what lets their heartbeats show where the plan put them.
"""

import os
import re
import stat
import subprocess
import sys

import pytest

from mmq.clients.gpus import parse
from mmq.clients.stack import StackState
from mmq.tasks import heartbeats
from mmq.tasks.placement import GIB, PROCESS_OVERHEAD_BYTES, Demand, Gpu, need_bytes, plan, visible_gpus
from mmq.workers.launcher import physical_gpu

LLAVA, SD, WHISPER, BLIP = 14 * GIB, int(2.1 * GIB), int(0.5 * GIB), int(0.9 * GIB)  # float16 weights


def gpu(index, total_gib, free_gib=None, name="NVIDIA L4"):
    return Gpu(index, name, int(total_gib * GIB), int((free_gib if free_gib is not None else total_gib) * GIB),
               uuid=f"GPU-{index:08d}")


def demands(**weights):
    return [Demand(name, f"{name}-model", size) for name, size in weights.items()]


def test_one_gpu_takes_what_fits_and_names_what_does_not():
    result = plan(demands(vqa=LLAVA, diffusion=SD, caption=BLIP, media=None), [gpu(0, 20)])
    assert [d.specialisation for d in result.unfit] == ["diffusion"]  # LLaVA went first; then BLIP still fits
    assert result.placed["vqa"].index == 0 and result.placed["caption"].index == 0
    assert result.placed["media"] is None  # needs no GPU: the CPU
    assert result.free_after[0] == 20 * GIB - need_bytes(LLAVA) - need_bytes(BLIP)


def test_four_mixed_gpus_get_one_worker_each_largest_first_where_most_is_free():
    gpus = [gpu(0, 24, 20), gpu(1, 80, 80, "NVIDIA A100"), gpu(2, 16), gpu(3, 24)]
    result = plan(demands(vqa=LLAVA, diffusion=SD, speech=WHISPER, caption=BLIP), gpus)
    assert result.fits
    assert {n: g.index for n, g in result.placed.items()} == {"vqa": 1, "diffusion": 3, "caption": 0, "speech": 2}
    # More workers than GPUs: a second on the GPU with the most left.
    spread = plan(demands(a=SD, b=SD, c=SD, d=SD), [gpu(0, 8), gpu(1, 8), gpu(2, 8)])
    assert sorted(g.index for g in spread.placed.values()) == [0, 0, 1, 2]


def test_too_small_gpus_place_nothing_that_does_not_fit():
    result = plan(demands(vqa=LLAVA, text2video=int(3.5 * GIB)), [gpu(0, 8), gpu(1, 12)])
    assert [d.specialisation for d in result.unfit] == ["vqa"]
    assert result.placed["text2video"].index == 1
    assert not result.fits


def test_no_gpu_at_all_runs_every_worker_on_the_cpu():
    result = plan(demands(vqa=LLAVA, caption=BLIP), [])
    assert result.fits and result.placed == {"vqa": None, "caption": None}


def test_a_need_is_the_weights_and_a_documented_margin():
    assert need_bytes(0) == PROCESS_OVERHEAD_BYTES
    assert need_bytes(10 * GIB) == 12 * GIB + PROCESS_OVERHEAD_BYTES


def test_an_inherited_cuda_visible_devices_is_the_allocation_and_the_numbering():
    host = parse("0, GPU-aaaa, NVIDIA L4, 23034, 22000\n1, GPU-bbbb, NVIDIA L4, 23034, 1000\n"
                 "2, GPU-cccc, NVIDIA A100, 81920, 81000\n3, GPU-dddd, NVIDIA L4, 23034, 23000\n")
    given = visible_gpus(host, "3,1")
    assert [(g.index, g.uuid) for g in given] == [(0, "GPU-dddd"), (1, "GPU-bbbb")]
    assert [g.uuid for g in visible_gpus(host, "GPU-cccc")] == ["GPU-cccc"]
    assert visible_gpus(host, "") == [] and len(visible_gpus(host, None)) == 4
    assert [g.index for g in visible_gpus(host, "2,9,0")] == [0]  # CUDA stops at the first unusable entry
    # `--gpus 1` under that allocation is the scheduler's GPU 1 of "3,1": physical 1; never outside it.
    assert physical_gpu("1", "3,1") == "1" and physical_gpu("0", "3,1") == "3" and physical_gpu("2", None) == "2"
    with pytest.raises(SystemExit, match=r"--gpus 2, but this process may use only 2 GPU\(s\): CUDA_VISIBLE"):
        physical_gpu("2", "3,1")


FAKE_SMI = """#!/bin/sh
# Stands in for the NVIDIA driver's nvidia-smi: four GPUs with different free memory.
cat <<'CSV'
0, GPU-00000000, NVIDIA L4, 23034, 2000
1, GPU-11111111, NVIDIA L4, 23034, 23000
2, GPU-22222222, NVIDIA A100, 81920, 81000
3, GPU-33333333, NVIDIA L4, 23034, 12000
CSV
"""


def test_up_starts_each_worker_on_the_gpu_the_plan_gives_it(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_SMI)
    (bin_dir / "nvidia-smi").chmod(stat.S_IRWXU)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMQ_", "AWS_", "CUDA_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", HF_HUB_OFFLINE="1", MMQ_TORCH_THREADS="1")
    data_dir = tmp_path / "data"
    cli = [sys.executable, "-m", "mmq.clients.cli"]
    planned = subprocess.run([*cli, "plan", "--only", "caption,summarize,media"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert planned.returncode == 0, planned.stderr
    where = dict(re.findall(r"^(\w+) .*?(GPU \d|CPU)", planned.stdout, re.M))
    assert where["media"] == "CPU" and where["caption"].startswith("GPU") and where["summarize"].startswith("GPU")
    up = subprocess.run([*cli, "up", "--only", "caption,summarize,media", "--no-gateway", "--no-flower",
                         "--data-dir", str(data_dir)], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert planned.stdout.splitlines()[1:] == [line for line in up.stdout.splitlines() if re.match(
            r"^(GPUs: |      \d: |caption |summarize |media )", line)][1:]  # the same plan, printed
        state = StackState.load(data_dir)
        import redis

        beats = {b["specialisation"]: b for b in heartbeats.workers(redis.Redis.from_url(state.env["MMQ_BROKER_URL"]))}
        for name in ("caption", "summarize"):
            assert beats[name]["gpu"] == where[name].split()[1], (name, beats[name])  # pinned where planned
            assert beats[name]["device"] == "cpu"  # (no CUDA here: the stand-in GPUs cannot compute)
        assert beats["media"]["gpu"] is None
    finally:
        subprocess.run([*cli, "down", "--data-dir", str(data_dir)], env=env, capture_output=True, timeout=300)
