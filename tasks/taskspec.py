"""A task: one model operation with typed inputs and outputs, served by one specialisation's queue."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .fields import Field, Kind, check_inputs


@dataclass(frozen=True)
class Output:
    """One named output: its kind, and whether it is a list of that kind."""

    kind: Kind
    many: bool = False

    def describe(self) -> str:
        return f"list of {self.kind.value}" if self.many else self.kind.value


@dataclass(frozen=True)
class TaskSpec:
    """A task: the specialisation (queue) that runs it, its input schema and its outputs."""

    name: str
    specialisation: str
    inputs: Mapping[str, Field]
    outputs: Mapping[str, Output]
    description: str = ""
    # Inputs of which at least one must be given non-empty (e.g. rank's candidates).
    one_of: tuple[str, ...] = ()
    # Inputs that set how much memory a step needs: what a step that runs out of memory names.
    memory_inputs: tuple[str, ...] = ()
    # A check across inputs that no one field can make (images and sounds are in no common space),
    # run on the checked inputs at submission and again by the worker; raises `InvalidInput`.
    check: Callable[[Mapping[str, Any]], object] | None = None

    def check_inputs(self, inputs: Mapping[str, Any], *, where: str) -> dict[str, Any]:
        checked = check_inputs(self.inputs, inputs, where=where, one_of=self.one_of)
        if self.check is not None:
            self.check(checked)
        return checked

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
            "outputs": {n: o.describe() for n, o in self.outputs.items()},
            **({"one_of": list(self.one_of)} if self.one_of else {}),
        }


def outputs(**kinds: Kind | Output) -> dict[str, Output]:
    """`outputs(text=Kind.TEXT, frames=Output(Kind.IMAGE, many=True))`."""
    return {name: k if isinstance(k, Output) else Output(k) for name, k in kinds.items()}
