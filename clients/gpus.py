"""The GPUs of this host, from `nvidia-smi` (never from CUDA: the process that plans and starts
workers must not initialise it), as far as an inherited CUDA_VISIBLE_DEVICES lets us use them."""

from __future__ import annotations

import os
import shutil
import subprocess

from mmq.tasks.errors import StackError
from mmq.tasks.placement import Gpu, visible_gpus

MIB = 1024**2
QUERY = "index,uuid,name,memory.total,memory.free"


def inventory() -> list[Gpu]:
    """The GPUs this process may use (none when there is no NVIDIA driver), numbered as `--gpus`
    takes them: positions in CUDA_VISIBLE_DEVICES when a scheduler set it, else nvidia-smi's."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        raise StackError(f"nvidia-smi could not list the GPUs: {exc}") from None
    return visible_gpus(parse(out), os.environ.get("CUDA_VISIBLE_DEVICES"))


def parse(csv: str) -> list[Gpu]:
    gpus = []
    for line in csv.strip().splitlines():
        index, uuid, name, total, free = (part.strip() for part in line.split(","))
        gpus.append(Gpu(index=int(index), name=name, total_bytes=int(float(total)) * MIB,
                        free_bytes=int(float(free)) * MIB, uuid=uuid))
    return gpus
