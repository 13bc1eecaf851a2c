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

One window is covered by a sweep rather than by kombu: a step message that a worker has just
taken off its queue (kombu's Redis transport pops it with BRPOP, then records it as
unacknowledged in a second command) when Redis stops, fails over, or the worker is killed, is in
neither place. A fresh-clone run of 2026-12-06 lost one job of 20 this way in the Redis restart
below, a batching worker killed as it took a burst of eight lost one of them in 4 of 13 runs of
`test_a_worker_killed_mid_batch_loses_no_job` (which now kills its worker only once it holds every
message), and CI's Sentinel failover test of 2026-12-06 left one job of 36 queued (no worker log
was kept to confirm the cause; this window is the one that fits). Every worker now
runs the lost-job sweep (`mmq.tasks.lost_jobs`, one at a time across the cluster, every
`MMQ_RESTORE_INTERVAL_S`): a job that has waited longer than the visibility timeout on its next
steps (a queued job on its first, a running one on the steps after those that succeeded), none
of whose messages is unacknowledged or in those steps' queues, has them queued again, from the
outputs it has (`tests/test_lost_jobs.py`). Not covered: the items of a fan-out and the step that
joins the last parallel steps.
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
