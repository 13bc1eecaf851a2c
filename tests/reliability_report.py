"""`python -m tests.reliability_report FIGURES.json docs/reliability.md` (`make reliability`):
the figures that the reliability tests recorded, as the table of docs/reliability.md."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

INTRO = """# Reliability

What the reliability suite proves, with figures: every test below runs real processes (Redis,
SeaweedFS, Celery workers, the gateway) with tiny random models on the CPU, injects its faults or
bad inputs, and counts what was lost. The suite runs in CI with the other tests (`make test`);
`make reliability` runs only it and rewrites this page; `make soak` runs the long load test
(10 minutes, outside CI).

Delivery is at least once, and steps are idempotent: a step whose worker died runs again (its
outputs are content-addressed, so a second run writes the same objects), a step that already
succeeded is not run again, and a step that keeps killing its worker is dead-lettered after
`MMQ_MAX_DELIVERIES` deliveries.
"""


def render(figures: list[dict]) -> str:
    rows = ["| test | load held | faults injected | bad inputs tried | lost | duplicate artifacts | result |",
            "|---|---|---|---|---|---|---|"]
    for f in figures:
        rows.append(f"| {f['test']} | {f['load']} | {f['faults']} | {f['bad_inputs']} | {f['lost']} | "
                    f"{f['duplicates']} | {f['result']} |")
    lost = sum(int(f["lost"]) for f in figures)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (f"{INTRO}\n## Latest run\n\n" + "\n".join(rows) +
            f"\n\nLost in all: **{lost}**. Measured {stamp} with `make reliability` on "
            f"{platform.machine()} Linux, Python {platform.python_version()}. The tests are "
            f"`tests/test_reliability.py`, `tests/test_faults.py`, `tests/test_fuzzing.py` and "
            f"`tests/test_security_suite.py` (see each test for what exactly it checks).\n")


def main(source: str, target: str) -> int:
    figures = json.loads(Path(source).read_text())
    Path(target).write_text(render(figures))
    print(f"{len(figures)} figures written to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
