"""The built-in tasks and pipelines, by name: where a task or pipeline is looked up.

The definitions live in `builtin_tasks` and `builtin_pipelines`; this module adds what every task
of a model family shares (the `model` input) and checks each pipeline against the tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from .builtin_pipelines import BUILTIN_PIPELINES
from .builtin_tasks import BUILTIN_TASKS
from .errors import UnknownTask
from .fields import Field, Kind
from .pipelines import Pipeline
from .taskspec import TaskSpec

# Every task of a model family may name the model to run it with: one of the ids its workers
# serve (model multiplexing); empty means the worker's default.
MODEL_INPUT = Field(Kind.TEXT, "A model id that the workers of this task serve (their default, or one of "
                    "MMQ_<SPECIALISATION>_MODELS); empty: the default.", default="", max_length=300)
_WITHOUT_MODEL = frozenset({"media"})  # PyAV, no model to choose


def _with_model_input(task: TaskSpec) -> TaskSpec:
    if task.specialisation in _WITHOUT_MODEL:
        return task
    return replace(task, inputs={**task.inputs, "model": MODEL_INPUT})


TASKS: Mapping[str, TaskSpec] = {task.name: _with_model_input(task) for task in BUILTIN_TASKS}
PIPELINES: Mapping[str, Pipeline] = {p.name: p.validate(TASKS) for p in BUILTIN_PIPELINES}


def lookup(name: str, extra: Mapping[str, Pipeline] | None = None) -> Pipeline:
    """The pipeline named `name` (built in, or among `extra`: those of the pipelines folder), or
    the one-step pipeline of the task named `name`."""
    extra = extra or {}
    if name in extra:
        return extra[name]
    if name in PIPELINES:
        return PIPELINES[name]
    if name in TASKS:
        return Pipeline.for_task(TASKS[name])
    import difflib

    close = difflib.get_close_matches(name, [*extra, *PIPELINES, *TASKS], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownTask(f"no task or pipeline named {name!r}{hint}; see `mmq pipelines`")


def describe_all(extra: Mapping[str, Pipeline] | None = None) -> list[dict]:
    pipelines = {**PIPELINES, **(extra or {})}
    return [*(p.describe() for p in pipelines.values()), *(t.describe() for t in TASKS.values())]
