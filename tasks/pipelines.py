"""Pipelines as values: steps that name tasks, with outputs wired into inputs.

A step binds each input of its task to a reference — `input.NAME` (an input of the pipeline) or
`STEP.OUTPUT` (an output of another step) — or to a `Format`, a text template over references.
A step with `each` runs once per item of a list (fan-out, a Celery group); a step that uses a
fan-out step's outputs sees them as lists (fan-in, a chord). Steps run as soon as what they use
is ready: steps of the same level run in parallel.

A pipeline is checked when it is defined: an unknown task, an unwired required input, a reference
to nothing, a cycle, or an output wired into an input of another kind raises `InvalidPipeline`
naming the step.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidPipeline
from .fields import Field, Kind, check_inputs
from .taskspec import Output, TaskSpec

PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w-]*\.[A-Za-z_]\w*)\}")
STEP_NAME = re.compile(r"[A-Za-z_][\w-]*")


@dataclass(frozen=True)
class Format:
    """A text input made from a template: `Format("Scenes: {captions.text}")`; lists are joined
    one item per line."""

    template: str

    @property
    def refs(self) -> list[str]:
        return PLACEHOLDER.findall(self.template)


Binding = str | Format


@dataclass(frozen=True)
class Step:
    """One task in a pipeline; `each` maps one input to a list reference to fan out over."""

    name: str
    task: str
    bind: Mapping[str, Binding] = field(default_factory=dict)
    each: Mapping[str, str] = field(default_factory=dict)
    # The step's output is a pipeline that runs as the rest of the job (an `ask`'s plan step);
    # only mmq sets it (`mmq.tasks.asking`), never a pipeline file.
    expands: bool = False

    def refs(self) -> list[str]:
        found = [*self.each.values()]
        for binding in self.bind.values():
            found += binding.refs if isinstance(binding, Format) else [binding]
        return found

    def depends_on(self) -> set[str]:
        return {ref.split(".", 1)[0] for ref in self.refs()} - {"input"}

    def bind_json(self) -> dict[str, Any]:
        """The bindings in their JSON form: a reference, or `{"format": template}`."""
        return {k: {"format": v.template} if isinstance(v, Format) else v for k, v in self.bind.items()}


@dataclass(frozen=True)
class Pipeline:
    """Named inputs, steps, and named outputs taken from the steps."""

    name: str
    inputs: Mapping[str, Field]
    steps: tuple[Step, ...]
    outputs: Mapping[str, str]
    description: str = ""
    one_of: tuple[str, ...] = ()
    check: Callable[[Mapping[str, Any]], object] | None = None  # a one-task pipeline's: `TaskSpec.check`

    def check_inputs(self, inputs: Mapping[str, Any], *, where: str) -> dict[str, Any]:
        checked = check_inputs(self.inputs, inputs, where=where, one_of=self.one_of)
        if self.check is not None:
            self.check(checked)
        return checked

    def validate(self, tasks: Mapping[str, TaskSpec]) -> Pipeline:
        """Raise `InvalidPipeline` naming the first inconsistency; return self when sound."""
        if not self.steps:
            raise InvalidPipeline(f"pipeline {self.name!r} has no steps")
        available: dict[str, Output] = {f"input.{n}": Output(f.kind, f.many) for n, f in self.inputs.items()}
        for step in self.ordered():
            self._validate_step(step, tasks, available)
            fanned = bool(step.each)
            available.update({f"{step.name}.{o}": Output(out.kind, out.many or fanned)
                              for o, out in tasks[step.task].outputs.items()})
        for name, ref in self.outputs.items():
            if ref not in available:
                raise InvalidPipeline(f"pipeline {self.name!r}: output {name!r} refers to unknown {ref!r}")
        return self

    def ordered(self) -> list[Step]:
        """Steps in an order where each comes after the steps it uses (a cycle is an error)."""
        levels = self.levels()
        return sorted(self.steps, key=lambda s: levels[s.name])

    def levels(self) -> dict[str, int]:
        """Each step's level: 0 uses only pipeline inputs; level n uses a step of level n-1."""
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names) or any(n == "input" or not STEP_NAME.fullmatch(n) for n in names):
            raise InvalidPipeline(f"pipeline {self.name!r}: step names must be unique, not 'input', made of "
                                  f"letters, digits, _ and -: {names}")
        by_name = {s.name: s for s in self.steps}
        levels: dict[str, int] = {}

        def level(name: str, trail: tuple[str, ...]) -> int:
            if name in trail:
                raise InvalidPipeline(f"pipeline {self.name!r}: steps form a cycle: {' -> '.join((*trail, name))}")
            if name not in levels:
                deps = by_name[name].depends_on()
                unknown = deps - by_name.keys()
                if unknown:
                    raise InvalidPipeline(f"pipeline {self.name!r}, step {name!r}: uses unknown step "
                                          f"{sorted(unknown)[0]!r}")
                levels[name] = 1 + max((level(d, (*trail, name)) for d in deps), default=-1)
            return levels[name]

        for name in names:
            level(name, ())
        return levels

    def _validate_step(self, step: Step, tasks: Mapping[str, TaskSpec], available: Mapping[str, Output]) -> None:
        where = f"pipeline {self.name!r}, step {step.name!r}"
        if step.task not in tasks:
            raise InvalidPipeline(f"{where}: unknown task {step.task!r}")
        task = tasks[step.task]
        if len(step.each) > 1:
            raise InvalidPipeline(f"{where}: a step fans out over one list, not {len(step.each)}")
        for target, ref in step.each.items():
            _check_target(where, task, target, step)
            source = _available(where, target, ref, available)
            wanted = task.inputs[target]
            if not source.many or not fits(source.kind, wanted.kind):
                raise InvalidPipeline(f"{where}: 'each' over {ref!r} ({source.describe()}) does not fit "
                                      f"input {target!r} ({_describe_field(wanted)})")
        for target, binding in step.bind.items():
            _check_target(where, task, target, step)
            wanted = task.inputs[target]
            if isinstance(binding, Format):
                if wanted.kind is not Kind.TEXT or wanted.many:
                    raise InvalidPipeline(f"{where}: input {target!r} is {_describe_field(wanted)}, "
                                          f"not text, so it cannot take a format")
                for ref in binding.refs:
                    if _available(where, target, ref, available).kind is not Kind.TEXT:
                        raise InvalidPipeline(f"{where}: format of input {target!r} uses {ref!r}, which is not text")
                continue
            source = _available(where, target, binding, available)
            # One value may feed a list input (as a list of one); a list never feeds one value.
            if not fits(source.kind, wanted.kind) or (source.many and not wanted.many):
                raise InvalidPipeline(f"{where}: input {target!r} wants {_describe_field(wanted)} "
                                      f"but {binding!r} is {source.describe()}")
        for name, spec in task.inputs.items():
            if spec.required and name not in step.bind and name not in step.each:
                raise InvalidPipeline(f"{where}: required input {name!r} is not wired")

    @classmethod
    def for_task(cls, task: TaskSpec) -> Pipeline:
        """The one-step pipeline that runs `task` with the caller's inputs."""
        return cls(
            name=task.name, inputs=task.inputs,
            steps=(Step(name=task.name, task=task.name, bind={n: f"input.{n}" for n in task.inputs}),),
            outputs={o: f"{task.name}.{o}" for o in task.outputs},
            description=task.description, one_of=task.one_of, check=task.check,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "pipeline",
            "description": self.description,
            "steps": [step_to_dict(s) for s in self.steps],
            "inputs": {n: f.describe() for n, f in self.inputs.items()},
            "outputs": dict(self.outputs),
        }


def step_to_dict(step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"name": step.name, "task": step.task, "bind": step.bind_json()}
    if step.each:
        out["each"] = dict(step.each)
    return out


def fits(source: Kind, target: Kind) -> bool:
    """Same kind, or an integer where a number is wanted (the planner's grammar uses the same rule)."""
    return source is target or (source is Kind.INTEGER and target is Kind.NUMBER)


def _check_target(where: str, task: TaskSpec, target: str, step: Step) -> None:
    if target not in task.inputs:
        raise InvalidPipeline(f"{where}: task {task.name!r} has no input {target!r}")
    if target in step.bind and target in step.each:
        raise InvalidPipeline(f"{where}: input {target!r} is both bound and fanned out over")


def _available(where: str, target: str, ref: str, available: Mapping[str, Output]) -> Output:
    if ref not in available:
        raise InvalidPipeline(f"{where}: input {target!r} is wired to unknown {ref!r}")
    return available[ref]


def _describe_field(spec: Field) -> str:
    return f"list of {spec.kind.value}" if spec.many else spec.kind.value
