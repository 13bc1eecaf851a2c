"""`mmq pipelines`: every task and pipeline with its inputs, and a pipeline's steps as a flow."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import Commands, SharedOptions


def add_pipelines(commands: Commands, shared: SharedOptions) -> None:
    pipelines = commands.add_parser("pipelines", help="the tasks and pipelines with their inputs",
                                    parents=[shared.json, shared.data_dir])
    pipelines.set_defaults(handler=_pipelines)


def _pipelines(args: argparse.Namespace) -> int:
    from ..client import Client

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
