"""What a plan may call: each task of the catalogue as a call signature, and the files a plan may read.

A call binds a task's required inputs (and one member of its `one_of`, so that `embed` and `rank` get
something to work on); optional inputs keep their defaults. Inputs that no expression can give (a
list of [x, y] points) make the call impossible, and the grammar leaves it out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput, NoPipelineFits
from ..fields import Field, Kind
from ..pipelines import fits
from ..taskspec import Output, TaskSpec

PLAN = "plan"  # the planner's own specialisation: never a call of a plan
FILE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class Call:
    """One way to call a task in a plan: the inputs bound, in the task's order."""

    task: TaskSpec
    args: tuple[tuple[str, Field], ...]

    @property
    def name(self) -> str:
        return self.task.name

    def outputs(self) -> Iterator[tuple[str, Output]]:
        """The outputs worth reading: for a `one_of` call, not those named after a member left
        unbound (`embed(images=...)` has no `text_embeddings` to give)."""
        bound = {name for name, _ in self.args}
        left_out = tuple(f"{m.removesuffix('s')}_" for m in self.task.one_of if m not in bound)
        for name, spec in self.task.outputs.items():
            if not (left_out and name.startswith(left_out)):
                yield name, spec


def calls(tasks: Mapping[str, TaskSpec]) -> Iterator[Call]:
    """Every call signature of the catalogue, the planner's own task left out, and the tasks that take
    embeddings: an embedding's kind does not say which model made it, so a grammar could wire a
    sentence embedding against CLIP ones (`rank_embeddings`), which fails when it runs."""
    for task in tasks.values():
        if task.specialisation == PLAN or any(f.kind is Kind.EMBEDDING for f in task.inputs.values()):
            continue
        required = [(n, f) for n, f in task.inputs.items() if f.required]
        if not task.one_of:
            yield Call(task, tuple(required))
            continue
        for member in task.one_of:
            chosen = {*dict(required), member}
            yield Call(task, tuple((n, f) for n, f in task.inputs.items() if n in chosen))


def bindable(field: Field) -> bool:
    """Whether an expression can give this input: a value of a kind, not a tuple of numbers."""
    return field.size is None


def parse_files(value: Any) -> dict[str, Kind]:
    """The `files` input of `plan`, {name: kind}, checked: names a plan can write, kinds mmq knows."""
    if not isinstance(value, Mapping):
        raise InvalidInput(f"files must be a mapping of input name to kind, got {type(value).__name__}",
                           field="files")
    files: dict[str, Kind] = {}
    for name, kind in value.items():
        if not isinstance(name, str) or not FILE_NAME.fullmatch(name):
            raise InvalidInput(f"files: {name!r} is not a usable input name (lower-case letters, digits and _, "
                               "starting with a letter, at most 32)", field="files")
        try:
            files[name] = Kind(kind)
        except ValueError:
            raise InvalidInput(f"files: {name!r} has unknown kind {kind!r}; kinds: "
                               f"{', '.join(k.value for k in Kind)}", field="files") from None
    return files


def check_files_usable(tasks: Mapping[str, TaskSpec], files: Mapping[str, Kind]) -> None:
    """Raise `NoPipelineFits` when a supplied file's kind is taken by no call of the catalogue."""
    wanted = [field for call in calls(tasks) for _, field in call.args if bindable(field)]
    for name, kind in files.items():
        if not any(fits(kind, field.kind) for field in wanted):
            takers = sorted({f.kind.value for f in wanted})
            raise NoPipelineFits(f"no task in the catalogue takes {_article(kind.value)} file ({name!r}); "
                                 f"the tasks take: {', '.join(takers)}")


def _article(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"
