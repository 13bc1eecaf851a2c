"""`python -m bench [B1 B2 ...]` (`make bench`): run the benchmarks, print the table, and keep it
in docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

from . import b2, runs
from .harness import model_settings, real_models

BENCHES = {"B1": runs.b1_overhead, "B2": b2.b2_batching, "B3": runs.b3_hop, "B4": runs.b4_submission,
           "B4B": runs.b4b_finished_memory,
           "B5": lambda: runs.b5_cold_start(tuple(os.environ.get("MMQ_BENCH_B5", "caption").split(",")))}
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
MARK = "<!-- bench table: written by `make bench` -->"
GPU_MARK = "<!-- gpu bench table: written by bench/gpu.sh -->"  # its own section, up to the next "## "


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def main(names: list[str]) -> int:
    chosen = [n.upper() for n in names] or list(BENCHES)
    rows = []
    for name in chosen:
        started = time.monotonic()
        result = BENCHES[name]()
        rows.extend(result if isinstance(result, list) else [result])
        print(f"{name} done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    table = "\n".join(["| bench | what | mmq | baseline | ratio | target |", "|---|---|---|---|---|---|",
                       *(row.markdown() for row in rows)])
    notes = [note for row in rows for note in row.notes]
    if notes:  # each run's figure and the batch sizes behind a median
        table += "\n\n" + "\n".join(f"- {note}" for note in dict.fromkeys(notes))
    gpu_run = real_models()
    command = "bench/gpu.sh" if gpu_run else "make bench" if not names else f"python -m bench {' '.join(names)}"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    models = "; ".join(f"{k}={v}" for k, v in sorted(model_settings().items()))
    report = f"{table}\n\nMeasured {stamp} with `{command}` on {machine()}" + (f"; {models}" if gpu_run else "") + ".\n"
    print(report)
    if gpu_run:
        _write_section(GPU_MARK, report)
    elif not names:
        _write_section(MARK, report)
    return 0


def _write_section(mark: str, report: str) -> None:
    """Replace what follows `mark` in docs/benchmarks.md, up to the next section heading."""
    if not DOC.exists() or mark not in DOC.read_text():
        return
    before, after = DOC.read_text().split(mark, 1)
    rest = after[after.index("\n## "):] if "\n## " in after else ""
    DOC.write_text(f"{before}{mark}\n{report}{rest}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
