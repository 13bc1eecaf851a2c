"""The local stack and this machine: `mmq up`, `down`, `plan`, `models`, `worker` and `demo`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from mmq.tasks.specialisation_specs import SPECIALISATIONS

from .common import EXIT_FAILED, Commands, SharedOptions, only


def add_up(commands: Commands, shared: SharedOptions) -> None:
    up = commands.add_parser("up", help="start the embedded local stack (Redis, S3, workers)",
                             parents=[shared.models, shared.data_dir])
    up.add_argument("--only", default=",".join(SPECIALISATIONS), help="specialisations to start")
    up.add_argument("--no-gateway", action="store_true", help="start no HTTP gateway")
    up.add_argument("--no-flower", action="store_true", help="start no Flower")
    up.set_defaults(handler=_up)


def add_down(commands: Commands, shared: SharedOptions) -> None:
    commands.add_parser("down", help="stop what `mmq up` started", parents=[shared.data_dir]).set_defaults(
        handler=_down)


def add_models(commands: Commands, shared: SharedOptions) -> None:
    models = commands.add_parser("models", help="weights on disk: pull them before anything starts, list them")
    models_commands = models.add_subparsers(dest="models_command", required=True)
    for name, text in (("pull", "fetch each configured checkpoint (only the files its loader reads; resumable)"),
                       ("list", "what is on disk, its size, and what is missing")):
        sub = models_commands.add_parser(name, help=text, parents=[shared.data_dir])
        sub.add_argument("specialisations", nargs="*", metavar="SPECIALISATION", help="default: all")
        sub.set_defaults(handler=_models)


def add_plan(commands: Commands, shared: SharedOptions) -> None:
    plan = commands.add_parser("plan", help="which worker goes on which GPU, by memory (what `mmq up` does)",
                               parents=[shared.models, shared.data_dir])
    plan.add_argument("--only", default=",".join(SPECIALISATIONS), help="specialisations to place")
    plan.set_defaults(handler=_plan)


def add_worker(commands: Commands, shared: SharedOptions) -> None:
    worker = commands.add_parser("worker", help="run a worker of one specialisation",
                                 parents=[shared.specialisation, shared.data_dir])
    worker.add_argument("--gpus", default="", help="GPU indices, e.g. 0,1: one pinned process each (default: the "
                        "only visible GPU, else the CPU)")
    worker.set_defaults(handler=_worker)


def add_demo(commands: Commands, shared: SharedOptions) -> None:
    demo = commands.add_parser("demo", help="up, turn a spoken request into a picture (real Whisper tiny.en, "
                               "tiny random diffusion), print, down", parents=[shared.data_dir])
    demo.add_argument("--audio", default=None, help="a spoken request (default: samples/voice-note.wav)")
    demo.set_defaults(handler=_demo)


def _up(args: argparse.Namespace) -> int:
    from ..stack import LocalStack

    stack = LocalStack(os.environ.get("MMQ_DATA_DIR", ".mmq"))
    state = stack.up(models=args.models, specialisations=only(args.only), gateway=not args.no_gateway,
                     flower=not args.no_flower)
    print(f"mmq is up; settings in {stack.data_dir / 'stack.json'}")
    if state.gateway_url:
        print(f"gateway: {state.gateway_url} (keys: mmq keys create --tenant NAME)")
    if state.flower_url:
        user = state.env["MMQ_FLOWER_BASIC_AUTH"].split(":", 1)[0]
        print(f"flower:  {state.flower_url} (user {user}; password: MMQ_FLOWER_BASIC_AUTH in stack.json)")
    print("status:  mmq status")
    return 0


def _down(args: argparse.Namespace) -> int:
    from ..stack import LocalStack

    LocalStack(os.environ.get("MMQ_DATA_DIR", ".mmq")).down()
    return 0


def _models(args: argparse.Namespace) -> int:
    return subprocess.call([sys.executable, "-m", "mmq.workers.weights_cli", args.models_command,
                            *args.specialisations])


def _plan(args: argparse.Namespace) -> int:
    from ..planning import place, refusal
    from ..stack import models_env

    placement = place(only(args.only), models_env(os.environ, args.models))
    for line in placement.lines():
        print(line)
    refused = refusal(placement)
    if refused:
        print(f"mmq: {refused}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _worker(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "mmq.workers", args.specialisation]
    if args.gpus:
        cmd += ["--gpus", args.gpus]
    return subprocess.call(cmd)


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(audio=args.audio)
