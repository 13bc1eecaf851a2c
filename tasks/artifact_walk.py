"""The one walk over artifact references wherever values hold them: alone, in a list (a `many` input,
a fan-out's gathered outputs, nested when a fan-out gathers lists), or, for a whole record or job
view, in the values of its mappings.

Every stage that turns references into something else uses it: the client (files to upload,
placeholders, the SDK's `Artifact` objects), the worker (inputs to fetch, outputs to store), the
gateway (presigned URLs). Lists and tuples are walked, and come back as lists; every other value
comes back as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .artifacts import ArtifactRef

Kind = type | tuple[type, ...]


def is_reference_dict(value: Any) -> bool:
    """An artifact reference in its JSON form, as job records and job views hold it."""
    return ArtifactRef.is_ref(value)


def map_artifacts(value: Any, convert: Callable[[Any], Any], *, kind: Kind | None = None,
                  through_mappings: bool = False) -> Any:
    """`value` with `convert` applied to every artifact in it: each instance of `kind`, or, by
    default, each reference in its JSON form. `through_mappings` also walks the values of the
    mappings that are not artifacts themselves (a whole record, or a job view)."""
    is_artifact = is_reference_dict if kind is None else (lambda item: isinstance(item, kind))

    def walk(item: Any) -> Any:
        if is_artifact(item):
            return convert(item)
        if isinstance(item, (list, tuple)):
            return [walk(part) for part in item]
        if through_mappings and isinstance(item, Mapping):
            return {key: walk(part) for key, part in item.items()}
        return item

    return walk(value)


def find_artifacts(value: Any, *, kind: Kind | None = None) -> list[Any]:
    """Every artifact in `value` (as `map_artifacts` finds them, through mappings too), in order."""
    found: list[Any] = []
    map_artifacts(value, found.append, kind=kind, through_mappings=True)
    return found


def map_named(name: str, value: Any, convert: Callable[[str, Any], Any]) -> Any:
    """An input's value with `convert(label, item)` applied to every item that is not a list, each
    labelled by where it is (`name`, `name[1]`, `name[1][0]`), for errors that point at it."""
    if isinstance(value, (list, tuple)):
        return [map_named(f"{name}[{index}]", item, convert) for index, item in enumerate(value)]
    return convert(name, value)
