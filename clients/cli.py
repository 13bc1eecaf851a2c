"""The `mmq` command line: the local stack, running tasks and pipelines, reading jobs."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmq.tasks.errors import InvalidInput, JobNotFound, JobTimeout, MMQError, ServiceUnavailable
from mmq.tasks.fields import Field
from mmq.tasks.heartbeats import EXIT_LOAD_FAILED
from mmq.tasks.records import JobStatus
from mmq.tasks.settings import TINY
from mmq.tasks.specialisation_specs import SPECIALISATIONS
from mmq.tasks.translation import third_party_errors

EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 1, 2, 3
EXIT_UNAVAILABLE = 5  # Redis, the artifact store or the gateway cannot be reached: worth trying again
EXIT_CODES = f"""exit codes:
  0  done (and a job waited for succeeded)
  {EXIT_FAILED}  failed: a job failed, or mmq refused (the one line on stderr says why)
  {EXIT_USAGE}  usage: an invalid argument or input
  {EXIT_TIMEOUT}  timeout: the job did not end within --timeout
  {EXIT_LOAD_FAILED}  a worker could not load its model (mmq ready)
  {EXIT_UNAVAILABLE}  unavailable: Redis, the artifact store (S3) or the gateway cannot be reached
     (stderr names which, and its address)"""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "data_dir", None):
        os.environ["MMQ_DATA_DIR"] = str(Path(args.data_dir).resolve())
    try:
        with third_party_errors():  # a Redis, S3 or HTTP error that no store translated: one line too
            return args.handler(args)
    except InvalidInput as exc:
        print(f"mmq: invalid input: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JobTimeout as exc:
        print(f"mmq: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    except ServiceUnavailable as exc:
        print(f"mmq: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except MMQError as exc:
        print(f"mmq: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmq", description="A job system for multimodal foundation models.",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the embedded local stack (Redis, S3, workers)")
    up.add_argument("--models", choices=[TINY, "hub"], default=TINY,
                    help="model source of each specialisation whose MMQ_<NAME>_MODEL is unset")
    up.add_argument("--data-dir", help="where the stack keeps its data (default .mmq)")
    up.add_argument("--only", default=",".join(SPECIALISATIONS), help="specialisations to start")
    up.add_argument("--no-gateway", action="store_true", help="start no HTTP gateway")
    up.add_argument("--no-flower", action="store_true", help="start no Flower")
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
    listing = jobs_commands.add_parser("list", help="jobs, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--cursor", help="the next-page cursor that the page before printed")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--data-dir")
    listing.set_defaults(handler=_jobs_list)
    download = jobs_commands.add_parser("download", help="write a job's output files into a folder")
    download.add_argument("id")
    download.add_argument("--out", required=True, help="folder (made if missing)")
    download.add_argument("--data-dir")
    download.set_defaults(handler=_jobs_download)

    keys = commands.add_parser("keys", help="API keys of the gateway, per tenant")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="a new key (printed once) for a tenant")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("--json", action="store_true")
    create.add_argument("--data-dir")
    create.set_defaults(handler=_keys_create)
    key_list = keys_commands.add_parser("list", help="keys (never their secrets)")
    key_list.add_argument("--tenant")
    key_list.add_argument("--json", action="store_true")
    key_list.add_argument("--data-dir")
    key_list.set_defaults(handler=_keys_list)
    revoke = keys_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("id")
    revoke.add_argument("--data-dir")
    revoke.set_defaults(handler=_keys_revoke)

    gateway = commands.add_parser("gateway", help="serve the HTTP gateway (and deliver webhooks)")
    gateway.add_argument("--host", default=None, help="default MMQ_GATEWAY_HOST or 127.0.0.1")
    gateway.add_argument("--port", type=int, default=None, help="default MMQ_GATEWAY_PORT or 8600")
    gateway.add_argument("--no-webhooks", action="store_true", help="leave webhooks to `mmq webhooks`")
    gateway.add_argument("--data-dir")
    gateway.set_defaults(handler=_gateway)

    status = commands.add_parser("status", help="queues, workers and recent failures")
    status.add_argument("--json", action="store_true")
    status.add_argument("--data-dir")
    status.set_defaults(handler=_status)

    ready = commands.add_parser("ready", help="exit 0 when a worker of SPECIALISATION on this host is ready "
                                "(1: loading or none; 4: its model failed to load; 5: Redis unreachable)")
    ready.add_argument("specialisation", choices=sorted(SPECIALISATIONS))
    ready.add_argument("--live", action="store_true",
                       help="exit 0 while the worker loads its model too (a liveness probe: a load may take minutes)")
    ready.add_argument("--data-dir")
    ready.set_defaults(handler=_ready)

    metrics = commands.add_parser("metrics", help="serve Prometheus metrics (for deployments without a gateway)")
    metrics.add_argument("--host", default="0.0.0.0")
    metrics.add_argument("--port", type=int, default=9600)
    metrics.add_argument("--data-dir")
    metrics.set_defaults(handler=_metrics)

    webhooks = commands.add_parser("webhooks", help="deliver webhooks (without serving the gateway)")
    webhooks.add_argument("--data-dir")
    webhooks.set_defaults(handler=_webhooks)

    pipelines = commands.add_parser("pipelines", help="the tasks and pipelines with their inputs")
    pipelines.add_argument("--json", action="store_true")
    pipelines.add_argument("--data-dir")
    pipelines.set_defaults(handler=_pipelines)

    models = commands.add_parser("models", help="weights on disk: pull them before anything starts, list them")
    models_commands = models.add_subparsers(dest="models_command", required=True)
    for name, text in (("pull", "fetch each configured checkpoint (only the files its loader reads; resumable)"),
                       ("list", "what is on disk, its size, and what is missing")):
        sub = models_commands.add_parser(name, help=text)
        sub.add_argument("specialisations", nargs="*", metavar="SPECIALISATION", help="default: all")
        sub.add_argument("--data-dir")
        sub.set_defaults(handler=_models)

    plan = commands.add_parser("plan", help="which worker goes on which GPU, by memory (what `mmq up` does)")
    plan.add_argument("--models", choices=[TINY, "hub"], default=TINY,
                      help="model source of each specialisation whose MMQ_<NAME>_MODEL is unset")
    plan.add_argument("--only", default=",".join(SPECIALISATIONS), help="specialisations to place")
    plan.add_argument("--data-dir")
    plan.set_defaults(handler=_plan)

    worker = commands.add_parser("worker", help="run a worker of one specialisation")
    worker.add_argument("specialisation", choices=sorted(SPECIALISATIONS))
    worker.add_argument("--gpus", default="", help="GPU indices, e.g. 0,1: one pinned process each (default: the "
                        "only visible GPU, else the CPU)")
    worker.add_argument("--data-dir")
    worker.set_defaults(handler=_worker)

    demo = commands.add_parser("demo", help="up, turn a spoken request into a picture (real Whisper tiny.en, "
                               "tiny random diffusion), print, down")
    demo.add_argument("--audio", default=None, help="a spoken request (default: samples/voice-note.wav)")
    demo.add_argument("--data-dir")
    demo.set_defaults(handler=_demo)
    return parser


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="wait for the job to end")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait at most")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress display while waiting")
    parser.add_argument("--data-dir")


def _only(raw: str) -> list[str]:
    only = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in only if name not in SPECIALISATIONS]
    if unknown:
        raise InvalidInput(f"unknown specialisation {unknown[0]!r}; known: {', '.join(SPECIALISATIONS)}", field="only")
    return only


def _up(args: argparse.Namespace) -> int:
    from .stack import LocalStack

    stack = LocalStack(os.environ.get("MMQ_DATA_DIR", ".mmq"))
    state = stack.up(models=args.models, specialisations=_only(args.only), gateway=not args.no_gateway,
                     flower=not args.no_flower)
    print(f"mmq is up; settings in {stack.data_dir / 'stack.json'}")
    if state.gateway_url:
        print(f"gateway: {state.gateway_url} (keys: mmq keys create --tenant NAME)")
    if state.flower_url:
        user = state.env["MMQ_FLOWER_BASIC_AUTH"].split(":", 1)[0]
        print(f"flower:  {state.flower_url} (user {user}; password: MMQ_FLOWER_BASIC_AUTH in stack.json)")
    print("status:  mmq status")
    return 0


def _models(args: argparse.Namespace) -> int:
    return subprocess.call([sys.executable, "-m", "mmq.workers.weights_cli", args.models_command,
                            *args.specialisations])


def _plan(args: argparse.Namespace) -> int:
    from .planning import place, refusal
    from .stack import models_env

    placement = place(_only(args.only), models_env(os.environ, args.models))
    for line in placement.lines():
        print(line)
    refused = refusal(placement)
    if refused:
        print(f"mmq: {refused}", file=sys.stderr)
        return EXIT_FAILED
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
        job = client.submit(args.name, **parse_inputs(client.input_schema(args.name), args.inputs))
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


def _jobs_list(args: argparse.Namespace) -> int:
    from .client import Client

    if not 1 <= args.limit <= 100:
        raise InvalidInput(f"--limit must be 1-100, got {args.limit}", field="limit")
    jobs, cursor = Client.from_env().jobs(limit=args.limit, cursor=args.cursor)
    rows = []
    for job in jobs:
        try:
            rows.append(job.record())
        except JobNotFound:  # expired between the listing and the read
            continue
    if args.json:
        print(json.dumps({"jobs": [{"id": r.id, "name": r.name, "status": r.status.value,
                                    "created_at": r.created_at, "finished_at": r.finished_at} for r in rows],
                          "next_cursor": cursor}, indent=2))
        return 0
    for record in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created_at))
        took = f"{record.finished_at - record.created_at:.1f}s" if record.finished_at else "-"
        print(f"{record.id}  {created}  {record.status.value:<10} {took:>8}  {record.name}")
    if cursor:
        print(f"more: mmq jobs list --cursor {cursor}", file=sys.stderr)
    return 0


def _jobs_download(args: argparse.Namespace) -> int:
    from .client import Client

    job = Client.from_env().job(args.id)
    if job.status() is not JobStatus.SUCCEEDED:
        raise InvalidInput(f"job {args.id} is {job.status().value}: only a succeeded job has outputs to download")
    written = job.download(args.out)
    for path in written:
        print(path)
    if not written:
        print(f"mmq: job {args.id} has no file outputs", file=sys.stderr)
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    from mmq.tasks.settings import Settings

    from .keys import KeyStore

    store = KeyStore.from_settings(Settings.from_env())
    key, plaintext = store.create(args.tenant, args.name)
    secret = store.webhook_secret(args.tenant)
    if args.json:
        print(json.dumps({**key.to_dict(), "key": plaintext, "webhook_secret": secret}, indent=2))
        return 0
    print(f"key {key.id} for tenant {key.tenant} (shown once; keep it secret):")
    print(plaintext)
    print(f"webhook signing secret of tenant {key.tenant}: {secret}")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    from mmq.tasks.settings import Settings

    from .keys import KeyStore

    keys = KeyStore.from_settings(Settings.from_env()).list(args.tenant)
    if args.json:
        print(json.dumps([k.to_dict() for k in keys], indent=2))
        return 0
    for key in keys:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(key.created_at))
        print(f"{key.id}  {key.tenant:<20} {'active' if key.active else 'revoked':<8} {created}  {key.name}")
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from mmq.tasks.settings import Settings

    from .keys import KeyStore

    key = KeyStore.from_settings(Settings.from_env()).revoke(args.id)
    print(f"key {key.id} of tenant {key.tenant} is revoked")
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from .gateway import serve

    serve(host=args.host, port=args.port, webhooks=not args.no_webhooks)
    return 0


def _status(args: argparse.Namespace) -> int:
    from mmq.tasks import heartbeats
    from mmq.tasks.records import JobStore
    from mmq.tasks.settings import Settings

    from .operations import status

    settings = Settings.from_env()
    report = status(JobStore.from_settings(settings), settings.redis.sync_client())
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("QUEUE          DEPTH  READY")
    for queue in report["queues"]:
        print(f"{queue['queue']:<14} {queue['depth']:>5}  {queue['workers']:>5}")
        if queue.get("last_load_error") and not queue["workers"]:
            print(f"    last load failed: {queue['last_load_error']['error']}")
    print(f"\n{'WORKER':<40} {'STATE':<22} DEVICE  GPU  LOAD    MODEL")
    for worker in report["workers"]:
        state = heartbeats.describe(worker)
        load = f"{worker['load_s']:>5.1f}s" if "load_s" in worker else "     -"
        print(f"{worker['hostname']:<40} {state.split(':')[0]:<22} {worker.get('device') or '-':<7} "
              f"{worker.get('gpu') or '-':<4} {load}  {worker['model']}")
        if worker.get("error"):
            print(f"    {worker['error']}")
        if worker.get("gpu_name"):
            memory = worker.get("gpu_memory") or {}
            print(f"    {worker['gpu_name']}: {memory.get('reserved', 0) / 2**30:.1f} of "
                  f"{worker.get('gpu_total_bytes', 0) / 2**30:.1f} GiB reserved by this worker")
    if not report["workers"]:
        print("(no worker has a current heartbeat)")
    jobs = report["jobs"]
    print(f"\njobs: {jobs.get('created', 0)} created, {jobs.get('succeeded', 0)} succeeded, "
          f"{jobs.get('failed', 0)} failed, {jobs.get('cancelled', 0)} cancelled")
    for failure in report["recent_failures"]:
        error = failure["error"] or {}
        when = time.strftime("%H:%M:%S", time.localtime(failure["finished_at"] or 0))
        print(f"  failed {when} {failure['id']} {failure['name']}: step {error.get('step')!r} "
              f"{error.get('type')}: {str(error.get('message'))[:100]}")
    return 0


def _ready(args: argparse.Namespace) -> int:
    import socket

    from mmq.tasks import heartbeats
    from mmq.tasks.settings import Settings

    from .operations import workers_here

    host = socket.gethostname()
    beats = workers_here(Settings.from_env().redis.sync_client(), args.specialisation, host)  # Redis away: 5
    phases = {w["phase"]: w for w in beats}
    if heartbeats.Phase.READY.value in phases:
        return 0
    if loading := phases.get(heartbeats.Phase.LOADING.value):
        print(f"mmq: not ready: the {args.specialisation} worker on {host} is {heartbeats.describe(loading)}",
              file=sys.stderr)
        return 0 if args.live else EXIT_FAILED
    if failed := phases.get(heartbeats.Phase.FAILED.value):
        print(f"mmq: not ready: the {args.specialisation} worker on {host} could not load its model: "
              f"{failed['error']}", file=sys.stderr)
        return EXIT_LOAD_FAILED
    print(f"mmq: no {args.specialisation} worker on {host}", file=sys.stderr)
    return EXIT_FAILED


def _metrics(args: argparse.Namespace) -> int:
    from mmq.tasks.settings import Settings

    from .exporter import serve_metrics

    serve_metrics(Settings.from_env(), host=args.host, port=args.port)
    return 0


def _webhooks(args: argparse.Namespace) -> int:
    from mmq.tasks.settings import Settings

    from .webhook_dispatcher import run_dispatcher

    run_dispatcher(Settings.from_env())
    return 0


def _wait_and_print(job: Any, timeout_s: float | None, as_json: bool, *, quiet: bool = False) -> int:
    if not quiet:
        from .progress import follow

        follow(job, timeout_s=timeout_s)
    record = job.wait(timeout_s=timeout_s)
    summary = job.to_dict(record)
    _print_job(summary, as_json)
    return 0 if record.status is JobStatus.SUCCEEDED else EXIT_FAILED


def _pipelines(args: argparse.Namespace) -> int:
    from .client import Client

    catalogue = Client.from_env().pipelines()
    if args.json:
        print(json.dumps(catalogue, indent=2))
        return 0
    for entry in catalogue:
        flow = _flow(entry["steps"]) if entry["kind"] == "pipeline" else f"queue {entry['queue']}"
        print(f"{entry['name']}  ({entry['kind']}: {flow})  {entry['description']}")
        for name, field in entry["inputs"].items():
            kind = f"{field['size']} numbers" if field.get("size") else field["kind"]  # [x, y], boxes
            kind = f"list of {kind}" if field.get("many") else kind
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

    return run_demo(audio=args.audio)


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


if __name__ == "__main__":
    raise SystemExit(main())
