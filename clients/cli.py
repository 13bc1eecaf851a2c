"""The `mmq` command line: the local stack, running tasks and pipelines, reading jobs.

This module parses the command line and turns what a command raises into one line on stderr
and its exit code; the commands themselves live in `mmq.clients.commands`, by group."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mmq.tasks.errors import InvalidInput, JobTimeout, MMQError, ServiceUnavailable
from mmq.tasks.translation import third_party_errors

from .commands import ask, catalogue, jobs, operators, servers, stack
from .commands.common import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    shared_options,
)

# Each command's `add_*`, in the order that `mmq --help` lists them.
COMMANDS = (stack.add_up, stack.add_down, jobs.add_run, ask.add_ask, jobs.add_jobs, operators.add_keys, servers.add_gateway,
            operators.add_status, operators.add_ready, servers.add_metrics, servers.add_webhooks,
            catalogue.add_pipelines, stack.add_models, stack.add_plan, stack.add_worker, stack.add_demo)

# What a command's error prints before its message, and the exit code: the first kind that matches.
FAILURES: tuple[tuple[type[MMQError], str, int], ...] = (
    (InvalidInput, "invalid input: ", EXIT_USAGE), (JobTimeout, "", EXIT_TIMEOUT),
    (ServiceUnavailable, "", EXIT_UNAVAILABLE), (MMQError, "", EXIT_FAILED))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "data_dir", None):
        os.environ["MMQ_DATA_DIR"] = str(Path(args.data_dir).resolve())
    try:
        with third_party_errors():  # a Redis, S3 or HTTP error that no store translated: one line too
            return args.handler(args)
    except MMQError as exc:
        prefix, code = next((prefix, code) for kind, prefix, code in FAILURES if isinstance(exc, kind))
        print(f"mmq: {prefix}{exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmq", description="A job system for multimodal foundation models.",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    shared = shared_options()
    for add in COMMANDS:
        add(commands, shared)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
