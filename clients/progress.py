"""Live progress of a job on a terminal: one line per step, redrawn as events arrive.

On a terminal the lines are redrawn in place; elsewhere (a log, a pipe) each change is one line.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

BAR_WIDTH = 24


def follow(job: Any, *, timeout_s: float | None = None, out: TextIO | None = None) -> None:
    """Print the job's progress until it ends (or `timeout_s` passes: JobTimeout)."""
    out = out or sys.stderr
    live = out.isatty()
    steps: dict[str, str] = {}
    drawn = 0
    for event in job.events(timeout_s=timeout_s):
        line = _line(event)
        if line is None:
            continue
        key = event.get("step", "job")
        if not live:
            if steps.get(key) != line:
                print(line, file=out, flush=True)
            steps[key] = line
            continue
        steps[key] = line
        if drawn:
            out.write(f"\x1b[{drawn}F")  # back to the first line drawn
        for text in steps.values():
            out.write(f"\x1b[2K{text}\n")
        out.flush()
        drawn = len(steps)


def _line(event: dict[str, Any]) -> str | None:
    if event["type"] == "job":
        return f"job: {event['status']}"
    if "item" in event:
        return None  # items show up in their step's progress
    done, total = event.get("progress") or (0, 0)
    return f"{event['step']:<14} {event['status']:<10} {bar(done, total)}"


def bar(done: int, total: int) -> str:
    if not total:
        return ""
    filled = round(BAR_WIDTH * done / total)
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}"
