"""Tasks and pipelines as values: what runs where, and how outputs are wired into inputs.

A `Pipeline` is a sequence of `Step`s. A step's inputs are bound to references: `input.NAME` (an
input of the pipeline) or `STEP.OUTPUT` (an output of an earlier step). A pipeline is checked when
it is defined: an unknown task, an unbound required input or an output wired into an input of
another kind raises `InvalidPipeline` naming the step. A single task is a one-step pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import InvalidPipeline
from .fields import Field, Kind, check_inputs


@dataclass(frozen=True)
class TaskSpec:
    """A task: the specialisation (queue) that runs it, its input schema and its outputs."""

    name: str
    specialisation: str
    inputs: Mapping[str, Field]
    outputs: Mapping[str, Kind]
    description: str = ""
    # Inputs of which at least one must be given non-empty (e.g. rank's candidates).
    one_of: tuple[str, ...] = ()

    def check_inputs(self, inputs: Mapping[str, Any], *, where: str) -> dict[str, Any]:
        return check_inputs(self.inputs, inputs, where=where, one_of=self.one_of)

    @property
    def celery_name(self) -> str:
        return f"mmq.{self.name}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "task",
            "queue": self.specialisation,
            "description": self.description,
            "inputs": {n: f.describe() for n, f in self.inputs.items()},
            "outputs": {n: k.value for n, k in self.outputs.items()},
            **({"one_of": list(self.one_of)} if self.one_of else {}),
        }


@dataclass(frozen=True)
class Step:
    """One task in a pipeline, with each of its inputs bound to a reference."""

    name: str
    task: str
    bind: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Pipeline:
    """Named inputs, steps run in order, named outputs taken from the steps."""

    name: str
    inputs: Mapping[str, Field]
    steps: tuple[Step, ...]
    outputs: Mapping[str, str]
    description: str = ""
    one_of: tuple[str, ...] = ()

    def check_inputs(self, inputs: Mapping[str, Any], *, where: str) -> dict[str, Any]:
        return check_inputs(self.inputs, inputs, where=where, one_of=self.one_of)

    def validate(self, tasks: Mapping[str, TaskSpec]) -> Pipeline:
        """Raise `InvalidPipeline` naming the first inconsistency; return self when sound."""
        if not self.steps:
            raise InvalidPipeline(f"pipeline {self.name!r} has no steps")
        available: dict[str, Kind] = {f"input.{n}": f.kind for n, f in self.inputs.items()}
        seen: set[str] = set()
        for step in self.steps:
            self._validate_step(step, tasks, available, seen)
            available.update({f"{step.name}.{o}": k for o, k in tasks[step.task].outputs.items()})
        for name, ref in self.outputs.items():
            if ref not in available:
                raise InvalidPipeline(f"pipeline {self.name!r}: output {name!r} refers to unknown {ref!r}")
        return self

    def _validate_step(self, step: Step, tasks: Mapping[str, TaskSpec],
                       available: Mapping[str, Kind], seen: set[str]) -> None:
        where = f"pipeline {self.name!r}, step {step.name!r}"
        if step.name in seen or step.name == "input" or "." in step.name:
            raise InvalidPipeline(f"{where}: step names must be unique, not 'input', without dots")
        seen.add(step.name)
        if step.task not in tasks:
            raise InvalidPipeline(f"{where}: unknown task {step.task!r}")
        task = tasks[step.task]
        for target, ref in step.bind.items():
            if target not in task.inputs:
                raise InvalidPipeline(f"{where}: task {task.name!r} has no input {target!r}")
            if ref not in available:
                raise InvalidPipeline(f"{where}: input {target!r} is wired to unknown {ref!r}")
            if available[ref] is not task.inputs[target].kind:
                raise InvalidPipeline(
                    f"{where}: input {target!r} wants {task.inputs[target].kind.value} "
                    f"but {ref!r} is {available[ref].value}"
                )
        for name, spec in task.inputs.items():
            if spec.required and name not in step.bind:
                raise InvalidPipeline(f"{where}: required input {name!r} is not wired")

    @classmethod
    def for_task(cls, task: TaskSpec) -> Pipeline:
        """The one-step pipeline that runs `task` with the caller's inputs."""
        return cls(
            name=task.name,
            inputs=task.inputs,
            steps=(Step(name=task.name, task=task.name, bind={n: f"input.{n}" for n in task.inputs}),),
            outputs=MappingProxyType({o: f"{task.name}.{o}" for o in task.outputs}),
            description=task.description,
            one_of=task.one_of,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "pipeline",
            "description": self.description,
            "steps": [{"name": s.name, "task": s.task, "bind": dict(s.bind)} for s in self.steps],
            "inputs": {n: f.describe() for n, f in self.inputs.items()},
            "outputs": dict(self.outputs),
        }


def resolve(ref: str, context: Mapping[str, Mapping[str, Any]]) -> Any:
    """The value of `input.NAME` or `STEP.OUTPUT` in a job's context."""
    scope, _, name = ref.partition(".")
    return context[scope][name]
