"""`python -m bench [B1 B2 ...]` (`make bench`): run the benchmarks, print the table, and keep it
in docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

from . import runs

BENCHES = {"B1": runs.b1_overhead, "B2": runs.b2_batching, "B3": runs.b3_hop, "B4": runs.b4_submission,
           "B5": lambda: runs.b5_cold_start(tuple(os.environ.get("MMQ_BENCH_B5", "caption").split(",")))}
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
MARK = "<!-- bench table: written by `make bench` -->"


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
    command = "make bench" if not names else f"python -m bench {' '.join(names)}"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report = f"{table}\n\nMeasured {stamp} with `{command}` on {machine()}.\n"
    print(report)
    if not names and DOC.exists() and MARK in DOC.read_text():
        before = DOC.read_text().split(MARK)[0]
        DOC.write_text(f"{before}{MARK}\n{report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
