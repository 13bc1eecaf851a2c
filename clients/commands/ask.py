"""`mmq ask "REQUEST" key=@file ...`: a request in words, planned into a pipeline by the `plan`
workers, shown, then run as one job; `--dry-run` shows the plan alone."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mmq.tasks.asking import PLAN_STEP, describe_plan
from mmq.tasks.records import JobStatus

from .common import EXIT_FAILED, Commands, SharedOptions
from .jobs import parse_inputs, print_job, wait_and_print


def add_ask(commands: Commands, shared: SharedOptions) -> None:
    ask = commands.add_parser("ask", help='plan a pipeline for a request and run it: mmq ask "..." key=@file',
                              parents=[shared.waiting, shared.json, shared.data_dir])
    ask.add_argument("request", help='what to do, in words: "transcribe this and summarise it"')
    ask.add_argument("inputs", nargs="*", metavar="key=value",
                     help="the inputs the plan may use: files as key=@path, texts as key=value")
    ask.add_argument("--wait", action="store_true", help="show the plan, then wait for the job to end")
    ask.add_argument("--dry-run", action="store_true", help="plan only: show the plan and run nothing")
    ask.set_defaults(handler=_ask)


def _ask(args: argparse.Namespace) -> int:
    from ..client import Client

    job = Client.from_env().ask(args.request, dry_run=args.dry_run, **parse_inputs({}, args.inputs))
    if args.dry_run:
        record = job.wait(timeout_s=args.timeout)
        if record.status is JobStatus.SUCCEEDED and not args.json:
            _print_plan((record.outputs or {}).get("pipeline") or {})
        else:
            print_job(job.to_dict(record), args.json)
        return 0 if record.status is JobStatus.SUCCEEDED else EXIT_FAILED
    if not args.wait:
        print_job(job.to_dict(), args.json)
        return 0
    if not args.json:
        plan = _plan_of(job, args.timeout)
        if plan is not None:
            _print_plan(plan)
    return wait_and_print(job, args.timeout, args.json, quiet=args.quiet)


def _plan_of(job: Any, timeout_s: float | None) -> dict[str, Any] | None:
    """The plan, once the plan step has succeeded; None when the job ended without one."""
    for event in job.events(timeout_s=timeout_s):
        planned = event.get("step") == PLAN_STEP and event.get("status") == JobStatus.SUCCEEDED.value
        if planned or event["type"] == "job" and JobStatus(event["status"]).terminal:
            break
    state = job.record().step_states.get(PLAN_STEP)
    return (state.outputs or {}).get("pipeline") if state is not None else None


def _print_plan(plan: dict[str, Any]) -> None:
    print("plan:")
    for line in describe_plan(plan):
        print(f"  {line}")
    sys.stdout.flush()
