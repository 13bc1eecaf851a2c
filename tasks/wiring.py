"""How values flow between steps: the job context that travels down the Celery canvas.

The context maps `input` to the job's inputs and each finished step's name to its outputs. A
fan-out item adds its step's outputs marked with its index; where a chord joins the branches, the
partial contexts are merged and the items gathered, in order, into lists.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .errors import MMQError
from .pipelines import PLACEHOLDER

ITEM = "__item__"
COUNT = "__count__"

Context = dict[str, Any]


def merge(received: Context | list[Any]) -> Context:
    """One context from what a step received: a context, or the (nested) list a chord delivers."""
    merged: Context = {}
    items: dict[str, dict[int, Mapping[str, Any]]] = {}
    for context in _flatten(received):
        for scope, values in context.items():
            if isinstance(values, Mapping) and ITEM in values:
                items.setdefault(scope, {})[int(values[ITEM])] = values
            else:
                merged.setdefault(scope, values)
    for scope, by_index in items.items():
        merged[scope] = gather(scope, by_index)
    return merged


def gather(step: str, by_index: Mapping[int, Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The outputs of every item of a fan-out step, as one list per output, in item order."""
    count = int(next(iter(by_index.values()))[COUNT])
    if sorted(by_index) != list(range(count)):
        raise MMQError(f"fan-out step {step!r} delivered items {sorted(by_index)} of {count}")
    names = [k for k in by_index[0] if k not in (ITEM, COUNT)]
    return {name: [by_index[i][name] for i in range(count)] for name in names}


def item_outputs(outputs: Mapping[str, Any], index: int, count: int) -> dict[str, Any]:
    return {**outputs, ITEM: index, COUNT: count}


def resolve(binding: str | Mapping[str, str], context: Mapping[str, Any]) -> Any:
    """The value of a reference (`input.NAME`, `STEP.OUTPUT`) or a `{format: ...}` template."""
    if isinstance(binding, Mapping):
        return PLACEHOLDER.sub(lambda m: _as_text(_lookup(m.group(1), context)), binding["format"])
    return _lookup(binding, context)


def _lookup(ref: str, context: Mapping[str, Any]) -> Any:
    scope, _, name = ref.partition(".")
    try:
        return context[scope][name]
    except (KeyError, TypeError):
        raise MMQError(f"the job context has no {ref!r} (has: {', '.join(context)})") from None


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(_as_text(v) for v in value)
    return str(value)


def _flatten(received: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(received, Mapping):
        yield received
    elif isinstance(received, list):
        for part in received:
            yield from _flatten(part)
    elif received is not None:
        raise MMQError(f"a step received a context of type {type(received).__name__}")
