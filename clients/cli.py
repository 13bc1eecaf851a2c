"""The `mmq` command line: the local stack, running tasks and pipelines, reading jobs."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmq.tasks.catalogue import describe_all
from mmq.tasks.errors import InvalidInput, JobTimeout, MMQError
from mmq.tasks.fields import Field
from mmq.tasks.jobs import JobStatus
from mmq.tasks.settings import TINY
from mmq.tasks.specialisations import SPECIALISATIONS

EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 1, 2, 3


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "data_dir", None):
        os.environ["MMQ_DATA_DIR"] = str(Path(args.data_dir).resolve())
    try:
        return args.handler(args)
    except InvalidInput as exc:
        print(f"mmq: invalid input: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JobTimeout as exc:
        print(f"mmq: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    except MMQError as exc:
        print(f"mmq: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmq", description="A job system for multimodal foundation models.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the embedded local stack (Redis, S3, workers)")
    up.add_argument("--models", choices=[TINY, "hub"], default=TINY,
                    help="model source of each specialisation whose MMQ_<NAME>_MODEL is unset")
    up.add_argument("--data-dir", help="where the stack keeps its data (default .mmq)")
    up.add_argument("--only", default=",".join(SPECIALISATIONS), help="specialisations to start")
    up.set_defaults(handler=_up)

    down = commands.add_parser("down", help="stop what `mmq up` started")
    down.add_argument("--data-dir")
    down.set_defaults(handler=_down)

    run = commands.add_parser("run", help="submit a task or pipeline: mmq run NAME key=value key=@file")
    run.add_argument("name", help="a task, a pipeline, or a pipeline spec file (.json, .yaml)")
    run.add_argument("inputs", nargs="*", metavar="key=value")
    _add_wait_options(run)
    run.set_defaults(handler=_run)

    jobs = commands.add_parser("jobs", help="read jobs")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    for name, handler in (("get", _jobs_get), ("wait", _jobs_wait), ("cancel", _jobs_cancel)):
        sub = jobs_commands.add_parser(name)
        sub.add_argument("id")
        sub.add_argument("--json", action="store_true")
        sub.add_argument("--data-dir")
        if name == "wait":
            sub.add_argument("--timeout", type=float, default=None, help="seconds")
            sub.add_argument("--quiet", action="store_true", help="no progress display")
        sub.set_defaults(handler=handler)

    pipelines = commands.add_parser("pipelines", help="the tasks and pipelines with their inputs")
    pipelines.add_argument("--json", action="store_true")
    pipelines.add_argument("--data-dir")
    pipelines.set_defaults(handler=_pipelines)

    worker = commands.add_parser("worker", help="run a worker of one specialisation")
    worker.add_argument("specialisation", choices=sorted(SPECIALISATIONS))
    worker.add_argument("--gpus", default="", help="GPU indices, e.g. 0,1: one pinned process each")
    worker.add_argument("--data-dir")
    worker.set_defaults(handler=_worker)

    demo = commands.add_parser("demo", help="up (tiny models), remix a sample image, print, down")
    demo.add_argument("--image", default=None, help="image to remix (default: the shipped sample)")
    demo.add_argument("--data-dir")
    demo.set_defaults(handler=_demo)
    return parser


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="wait for the job to end")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait at most")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress display while waiting")
    parser.add_argument("--data-dir")


def _up(args: argparse.Namespace) -> int:
    from .stack import LocalStack

    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in SPECIALISATIONS]
    if unknown:
        raise InvalidInput(f"unknown specialisation {unknown[0]!r}; known: {', '.join(SPECIALISATIONS)}")
    stack = LocalStack(os.environ.get("MMQ_DATA_DIR", ".mmq"))
    stack.up(models=args.models, specialisations=only)
    print(f"mmq is up; settings in {stack.data_dir / 'stack.json'}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from .stack import LocalStack

    LocalStack(os.environ.get("MMQ_DATA_DIR", ".mmq")).down()
    return 0


def _run(args: argparse.Namespace) -> int:
    from .client import Client

    client = Client.from_env()
    spec_file = Path(args.name)
    if spec_file.suffix in (".json", ".yaml", ".yml") and spec_file.is_file():
        from mmq.tasks.catalogue import TASKS
        from mmq.tasks.specfiles import load_pipeline_file

        pipeline = load_pipeline_file(spec_file, TASKS)
        job = client.submit_pipeline(pipeline, **parse_inputs(pipeline.inputs, args.inputs))
    else:
        job = client.submit(args.name, **parse_inputs(client.pipeline(args.name).inputs, args.inputs))
    if not args.wait:
        _print_job(job.to_dict(), args.json)
        return 0
    return _wait_and_print(job, args.timeout, args.json, quiet=args.quiet)


def _jobs_get(args: argparse.Namespace) -> int:
    from .client import Client

    job = Client.from_env().job(args.id)
    _print_job(job.to_dict(), args.json)
    return 0


def _jobs_wait(args: argparse.Namespace) -> int:
    from .client import Client

    return _wait_and_print(Client.from_env().job(args.id), args.timeout, args.json, quiet=args.quiet)


def _jobs_cancel(args: argparse.Namespace) -> int:
    from .client import Client

    job = Client.from_env().job(args.id)
    cancelled = job.cancel()
    _print_job(job.to_dict(), args.json)
    if not cancelled:
        print(f"mmq: job {args.id} had already ended", file=sys.stderr)
    return 0 if cancelled else EXIT_FAILED


def _wait_and_print(job: Any, timeout_s: float | None, as_json: bool, *, quiet: bool = False) -> int:
    if not quiet:
        from .progress import follow

        follow(job, timeout_s=timeout_s)
    record = job.wait(timeout_s=timeout_s)
    summary = job.to_dict(record)
    _print_job(summary, as_json)
    return 0 if record.status is JobStatus.SUCCEEDED else EXIT_FAILED


def _pipelines(args: argparse.Namespace) -> int:
    from mmq.tasks.catalogue import TASKS
    from mmq.tasks.settings import Settings
    from mmq.tasks.specfiles import load_pipeline_folder

    catalogue = describe_all(load_pipeline_folder(Settings.from_env().pipelines_dir, TASKS))
    if args.json:
        print(json.dumps(catalogue, indent=2))
        return 0
    for entry in catalogue:
        flow = _flow(entry["steps"]) if entry["kind"] == "pipeline" else f"queue {entry['queue']}"
        print(f"{entry['name']}  ({entry['kind']}: {flow})  {entry['description']}")
        for name, field in entry["inputs"].items():
            kind = f"list of {field['kind']}" if field.get("many") else field["kind"]
            default = "" if field["required"] else f" = {field.get('default')!r}"
            print(f"    {name}: {kind}{default}")
    return 0


def _flow(steps: list[dict[str, Any]]) -> str:
    """`extract → (caption ∥ transcribe) → summarize`: levels in order, parallel steps together."""
    from mmq.tasks.pipelines import Pipeline
    from mmq.tasks.specfiles import step_from_dict

    parsed = tuple(step_from_dict("flow", i, step) for i, step in enumerate(steps))
    levels = Pipeline(name="flow", inputs={}, steps=parsed, outputs={}).levels()
    stages: dict[int, list[str]] = {}
    for step in steps:
        stages.setdefault(levels[step["name"]], []).append(step["task"] + (" each" if step.get("each") else ""))
    return " → ".join(names[0] if len(names) == 1 else f"({' ∥ '.join(names)})"
                      for _, names in sorted(stages.items()))


def _worker(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "mmq.workers", args.specialisation]
    if args.gpus:
        cmd += ["--gpus", args.gpus]
    return subprocess.call(cmd)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(image=args.image)


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


def _print_job(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(f"job {summary['id']} ({summary['name']}): {summary['status']}")
    for name, value in (summary.get("outputs") or {}).items():
        if isinstance(value, dict) and "uri" in value:
            print(f"  {name}: {value['uri']} ({value['media_type']}, {value['size']} bytes)")
            print(f"    url: {value['url']}")
        else:
            print(f"  {name}: {value}")
    if summary.get("error"):
        error = summary["error"]
        print(f"  error in step {error['step']!r}: {error['type']}: {error['message']}")


if __name__ == "__main__":
    raise SystemExit(main())
