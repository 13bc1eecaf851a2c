"""`mmq run` and `mmq jobs ...`: submit a task or pipeline, read, wait for, cancel, list and
download jobs, through the SDK (directly, or through the gateway when MMQ_GATEWAY_URL is set)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmq.tasks.errors import InvalidInput
from mmq.tasks.fields import Field
from mmq.tasks.records import JobStatus

from .common import EXIT_FAILED, Commands, SharedOptions


def add_run(commands: Commands, shared: SharedOptions) -> None:
    run = commands.add_parser("run", help="submit a task or pipeline: mmq run NAME key=value key=@file",
                              parents=[shared.waiting, shared.json, shared.data_dir])
    run.add_argument("name", help="a task, a pipeline, or a pipeline spec file (.json, .yaml)")
    run.add_argument("inputs", nargs="*", metavar="key=value")
    run.add_argument("--wait", action="store_true", help="wait for the job to end")
    run.set_defaults(handler=_run)


def add_jobs(commands: Commands, shared: SharedOptions) -> None:
    jobs = commands.add_parser("jobs", help="read jobs")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    reading = [shared.job, shared.json, shared.data_dir]
    jobs_commands.add_parser("get", parents=reading).set_defaults(handler=_jobs_get)
    jobs_commands.add_parser("wait", parents=[*reading, shared.waiting]).set_defaults(handler=_jobs_wait)
    jobs_commands.add_parser("cancel", parents=reading).set_defaults(handler=_jobs_cancel)
    listing = jobs_commands.add_parser("list", help="jobs, newest first", parents=[shared.json, shared.data_dir])
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--cursor", help="the next-page cursor that the page before printed")
    listing.set_defaults(handler=_jobs_list)
    download = jobs_commands.add_parser("download", help="write a job's output files into a folder",
                                        parents=[shared.job, shared.data_dir])
    download.add_argument("--out", required=True, help="folder (made if missing)")
    download.set_defaults(handler=_jobs_download)


def _run(args: argparse.Namespace) -> int:
    from ..client import Client

    client = Client.from_env()
    spec_file = Path(args.name)
    if spec_file.suffix in (".json", ".yaml", ".yml") and spec_file.is_file():
        from mmq.tasks.catalogue import TASKS
        from mmq.tasks.specfiles import load_pipeline_file

        pipeline = load_pipeline_file(spec_file, TASKS)
        job = client.submit_pipeline(pipeline, **parse_inputs(pipeline.inputs, args.inputs))
    else:
        job = client.submit(args.name, **parse_inputs(client.input_schema(args.name), args.inputs))
    if not args.wait:
        print_job(job.to_dict(), args.json)
        return 0
    return wait_and_print(job, args.timeout, args.json, quiet=args.quiet)


def _jobs_get(args: argparse.Namespace) -> int:
    from ..client import Client

    job = Client.from_env().job(args.id)
    print_job(job.to_dict(), args.json)
    return 0


def _jobs_wait(args: argparse.Namespace) -> int:
    from ..client import Client

    return wait_and_print(Client.from_env().job(args.id), args.timeout, args.json, quiet=args.quiet)


def _jobs_cancel(args: argparse.Namespace) -> int:
    from ..client import Client

    job = Client.from_env().job(args.id)
    cancelled = job.cancel()
    print_job(job.to_dict(), args.json)
    if not cancelled:
        print(f"mmq: job {args.id} had already ended", file=sys.stderr)
    return 0 if cancelled else EXIT_FAILED


def _jobs_list(args: argparse.Namespace) -> int:
    from ..client import Client
    from ..transport import job_list

    if not 1 <= args.limit <= 100:
        raise InvalidInput(f"--limit must be 1-100, got {args.limit}", field="limit")
    transport = Client.from_env().transport
    listing = job_list(transport.list_jobs(limit=args.limit, cursor=args.cursor), transport.record)
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    for job in listing["jobs"]:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["created_at"]))
        took = f"{job['finished_at'] - job['created_at']:.1f}s" if job["finished_at"] else "-"
        print(f"{job['id']}  {created}  {job['status']:<10} {took:>8}  {job['name']}")
    if listing["next_cursor"]:
        print(f"more: mmq jobs list --cursor {listing['next_cursor']}", file=sys.stderr)
    return 0


def _jobs_download(args: argparse.Namespace) -> int:
    from ..client import Client

    job = Client.from_env().job(args.id)
    if job.status() is not JobStatus.SUCCEEDED:
        raise InvalidInput(f"job {args.id} is {job.status().value}: only a succeeded job has outputs to download")
    written = job.download(args.out)
    for path in written:
        print(path)
    if not written:
        print(f"mmq: job {args.id} has no file outputs", file=sys.stderr)
    return 0


def wait_and_print(job: Any, timeout_s: float | None, as_json: bool, *, quiet: bool = False) -> int:
    if not quiet:
        from ..progress import follow

        follow(job, timeout_s=timeout_s)
    record = job.wait(timeout_s=timeout_s)
    summary = job.to_dict(record)
    print_job(summary, as_json)
    return 0 if record.status is JobStatus.SUCCEEDED else EXIT_FAILED


def parse_inputs(schema: Mapping[str, Field], pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` and `key=@file` pairs, typed by the task's or pipeline's input schema; a list
    input is given by repeating its key (`images=@a.png images=@b.png`)."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"inputs are key=value or key=@file, got {pair!r}")
        field = schema.get(key)
        if raw.startswith("@"):
            value: Any = Path(raw[1:])
        elif field is None:
            value = raw  # unknown name: the submission names it, with a suggestion
        else:
            value = field.parse(key, raw)
        if field is not None and field.many:
            inputs.setdefault(key, []).append(value)
        elif key in inputs:
            raise InvalidInput(f"input {key!r} is given twice (only list inputs repeat)", field=key)
        else:
            inputs[key] = value
    return inputs


def print_job(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(f"job {summary['id']} ({summary['name']}): {summary['status']}")
    if summary.get("waiting"):
        print(f"  waiting: {summary['waiting']}")
    for name, value in (summary.get("outputs") or {}).items():
        if isinstance(value, dict) and "uri" in value:
            print(f"  {name}: {value['uri']} ({value['media_type']}, {value['size']} bytes)")
            print(f"    url: {value['url']}")
        else:
            print(f"  {name}: {value}")
    if summary.get("error"):
        error = summary["error"]
        print(f"  error in step {error['step']!r}: {error['type']}: {error['message']}")
