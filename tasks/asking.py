"""Asking: a request in words becomes a pipeline, and runs, as one job.

An ask is a job whose first step is the `plan` task (a language model on its own workers, see
`mmq.workers.plan`): given the request and the names and kinds of the files supplied, it writes a
pipeline. That step `expands`: when it succeeds, the worker adds the planned steps to the same job
record (`expand`) and queues them, so planning is cancelled, retried and recorded like any step,
and the job's outputs are the plan's (`plan`, the pipeline as run) and the planned pipeline's.
`plan` alone (a plan-only job: `mmq ask --dry-run`, `POST /v1/plans`) is the task by itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .errors import InvalidInput, InvalidPipeline
from .fields import Field, Kind
from .pipelines import Pipeline, Step
from .records import JobRecord, jsonable_inputs, step_specs
from .specfiles import pipeline_from_dict
from .taskspec import TaskSpec

ASK = "ask"  # the name an ask job has
PLAN_TASK = "plan"
PLAN_STEP = "plan"  # the step of an ask that plans; also the output that shows the plan
REQUEST_MAX_CHARS = 2000
_RESERVED = ("request", "files")
INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def ask_pipeline(kinds: Mapping[str, Kind]) -> Pipeline:
    """The one-step pipeline of an ask with inputs of these kinds: its plan step expands."""
    plan_files(kinds)  # the names checked
    inputs = {
        "request": Field(Kind.TEXT, "What to do, in words.", max_length=REQUEST_MAX_CHARS),
        "files": Field(Kind.JSON, "The inputs the plan may use, by name: their kinds."),
        **{name: Field(kind, f"An input the plan may use ({kind.value}).") for name, kind in kinds.items()},
    }
    plan = Step(PLAN_STEP, PLAN_TASK, bind={"request": "input.request", "files": "input.files"}, expands=True)
    return Pipeline(name=ASK, inputs=inputs, steps=(plan,), outputs={"plan": f"{PLAN_STEP}.pipeline"},
                    description="A request in words, planned into a pipeline of the catalogue, then run.")


def ask_inputs(request: str, kinds: Mapping[str, Kind], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """What an ask job is submitted with: the request, the kinds of its inputs, the inputs."""
    return {"request": request, "files": plan_files(kinds), **inputs}


def plan_inputs(request: str, kinds: Mapping[str, Kind]) -> dict[str, Any]:
    """The inputs of a plan-only job (the `plan` task alone)."""
    return {"request": request, "files": plan_files(kinds)}


def plan_files(kinds: Mapping[str, Kind]) -> dict[str, str]:
    """The `files` input of the plan task: each input's name and kind, the names checked (a plan
    refers to them as `input.NAME`)."""
    for name in kinds:
        if name in _RESERVED:
            raise InvalidInput(f"an ask's inputs may not be called {name!r}: the name is the ask's own; "
                               "rename the input", field=name)
        if not INPUT_NAME.fullmatch(name):
            raise InvalidInput(f"an ask's input names are letters, digits and _ (not first a digit), up to 64: "
                               f"got {name!r}", field=name)
    return {name: kind.value for name, kind in kinds.items()}


def kind_of_value(name: str, value: Any, media_type: str | None) -> Kind:
    """The kind an ask's input is planned as: a file by its media type, else text or a number."""
    if media_type is not None:
        family = media_type.split("/", 1)[0]
        for kind in (Kind.IMAGE, Kind.AUDIO, Kind.VIDEO, Kind.MESH, Kind.ARRAY):
            if kind.accepts(media_type) and (kind is not Kind.AUDIO or family == "audio"):
                return kind
        raise InvalidInput(f"{name}: no task takes a file of type {media_type}", field=name)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidInput(f"{name}: an ask's inputs are files, texts or numbers, got {type(value).__name__}",
                           field=name)
    return Kind.TEXT if isinstance(value, str) else Kind.INTEGER if isinstance(value, int) else Kind.NUMBER


def expand(record: JobRecord, plan: Mapping[str, Any], tasks: Mapping[str, TaskSpec]) -> JobRecord:
    """`record` with the planned pipeline's steps after its plan step, its inputs checked against
    the plan's, and its outputs the plan (`plan`) and the planned pipeline's. A record expanded
    already (a redelivered plan step) is returned as it is."""
    if len(record.steps) > 1:
        return record
    pipeline = pipeline_from_dict(plan, tasks)
    clash = {s.name for s in pipeline.steps} & {s.name for s in record.steps} | (set(pipeline.outputs) & {"plan"})
    if clash:
        raise InvalidPipeline(f"the plan names a step or output {sorted(clash)[0]!r}, which the ask uses itself")
    given = {name: record.inputs[name] for name in pipeline.inputs if name in record.inputs}
    checked = pipeline.check_inputs(given, where="the plan")
    steps = step_specs(pipeline, record.id, first_index=len(record.steps),
                       first_level=1 + max(s.level for s in record.steps))
    return replace(record, inputs={**record.inputs, **jsonable_inputs(checked)}, steps=[*record.steps, *steps],
                   output_map={**record.output_map, **pipeline.outputs})


def describe_plan(plan: Mapping[str, Any]) -> list[str]:
    """A planned pipeline (a pipeline spec dict) as lines a person reads: each step as a call
    with its wiring, then the outputs."""
    lines = []
    for step in plan.get("steps", []):
        wiring = ", ".join(f"{name}={_binding_text(value)}" for name, value in step.get("bind", {}).items())
        lines.append(f"{step['name']} = {step['task']}({wiring})")
    outputs = ", ".join(f"{name}={ref}" for name, ref in plan.get("outputs", {}).items())
    return [*lines, f"outputs: {outputs}"]


def _binding_text(value: Any) -> str:
    return repr(value["format"]) if isinstance(value, Mapping) else str(value)
