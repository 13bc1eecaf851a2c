"""Why a model did not load, in one line an operator can act on.

transformers, diffusers, huggingface_hub and safetensors say it in many ways, often over several
lines (a misspelt folder reads as an invalid repository id; an id missing from an offline cache as
a failed connection). This names the cause and the model, and keeps the library's first line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from .memory import first_line, is_out_of_memory


def describe_load_error(error: BaseException, source: str) -> str:
    """One line: what went wrong loading `source` (a hub id, a local folder, or "tiny")."""
    causes = list(_chain(error))
    names = {type(e).__name__ for e in causes}
    detail = first_line(error)
    if _looks_like_path(source) and not Path(source).expanduser().exists():
        return f"model folder {source} does not exist"
    if any(is_out_of_memory(e) for e in causes):
        return f"out of memory while loading {source} ({detail})"
    if "SafetensorError" in names or "HeaderTooLarge" in detail:
        return f"the weights of {source} are corrupt or incomplete ({detail})"
    if "GatedRepoError" in names:
        return f"{source} is gated on the hub: accept its terms there and give this worker HF_TOKEN ({detail})"
    if "RepositoryNotFoundError" in names:
        return f"no model {source!r} on the hub, or it is private ({detail})"
    if "LocalEntryNotFoundError" in names or "OfflineModeIsEnabled" in names:
        if _offline():
            return (f"{source} is not on this machine and the hub is off (HF_HUB_OFFLINE=1): fetch it first "
                    f"or name a local folder")
        return f"{source} is not on this machine and the hub cannot be reached ({detail})"
    if "EntryNotFoundError" in names:
        return f"{source} lacks a file its loader needs ({detail})"
    return f"{source}: {detail}"


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _looks_like_path(source: str) -> bool:
    # A relative "org/name" is a hub id unless such a folder exists (then transformers reads it).
    return source.startswith(("/", "./", "../", "~"))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
