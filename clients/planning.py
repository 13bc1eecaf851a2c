"""Before workers start: is each checkpoint on disk, and which GPU does each worker get?

What each worker loads is measured by the workers' own code, run as a process of its own
(`python -m mmq.workers.weights_cli needs`: the command line never imports the workers), from the
weights on disk; the GPUs come from nvidia-smi (`gpus`). The plan itself is `tasks.placement`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mmq.tasks.errors import StackError
from mmq.tasks.placement import GIB, Demand, Gpu, Plan, describe, plan

from .gpus import inventory


@dataclass
class Placement:
    plan: Plan
    demands: dict[str, Demand]
    gpus: list[Gpu]
    not_on_disk: dict[str, list[str]]  # specialisation -> files (or folder) missing

    def lines(self) -> list[str]:
        head = [f"{g.index}: {g.name}, {g.free_bytes / GIB:.1f} of {g.total_bytes / GIB:.1f} GiB free"
                for g in self.gpus] or ["no GPU: every worker runs on the CPU"]
        return ["GPUs: " + head[0], *("      " + line for line in head[1:]), *describe(self.plan, self.demands)]

    def gpu_of(self, specialisation: str) -> int | None:
        gpu = self.plan.placed.get(specialisation)
        return gpu.index if gpu else None


def place(specialisations: Sequence[str], env: Mapping[str, str]) -> Placement:
    """What each worker needs (its checkpoint as configured in `env`) and where it goes."""
    gpus = inventory()
    entries = _needs(specialisations, env, on_gpu=bool(gpus))
    demands = {e["specialisation"]: Demand(e["specialisation"], e["model"], e["weights_bytes"]) for e in entries}
    missing = {e["specialisation"]: e["missing"] for e in entries if not e["on_disk"]}
    placeable = [d for name, d in demands.items() if name not in missing]
    return Placement(plan(placeable, gpus), demands, gpus, missing)


def refusal(placement: Placement) -> str | None:
    """Why these workers must not be started, in a line; None when they may."""
    if placement.not_on_disk:
        names = sorted(placement.not_on_disk)
        listed = ", ".join(f"{n} ({placement.demands[n].model})" for n in names)
        return (f"not on disk: {listed}; fetch them first (nothing is downloaded under a start-up "
                f"timeout): mmq models pull {' '.join(names)}")
    if not placement.plan.fits:
        unfit = ", ".join(f"{d.specialisation} (needs {d.need_bytes / GIB:.1f} GiB)" for d in placement.plan.unfit)
        fitting = [n for n, gpu in placement.plan.placed.items() if gpu is not None or not placement.gpus]
        return (f"does not fit the GPUs' free memory: {unfit}. Choose fewer with --only, e.g. "
                f"--only {','.join(sorted(fitting))}, or more or larger GPUs")
    return None


def _needs(specialisations: Sequence[str], env: Mapping[str, str], *, on_gpu: bool) -> list[dict]:
    command = [sys.executable, "-m", "mmq.workers.weights_cli", "needs", *(["--on-gpu"] if on_gpu else []),
               *specialisations]
    try:
        done = subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        raise StackError(f"could not measure the checkpoints: {exc}") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        if "No module named" in why:
            why += " (sizing checkpoints needs the workers' packages: pip install 'mmq[workers]')"
        raise StackError(f"could not measure the checkpoints: {why}")
    return json.loads(done.stdout)
