"""Embedding spaces: which inputs can be compared with which.

Two models share the `clip` queue, each with a space of its own: CLIP embeds images and texts in
one space, CLAP sounds and texts in another. A CLIP vector and a CLAP vector are not comparable
(different models, often different widths), and no model here puts images and sounds in one
space (ImageBind, which would, has no port in transformers or diffusers). So a job that gives
images and sounds together is refused, and every embedding says which space it is in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import InvalidInput

CLIP, CLAP = "clip", "clap"
SPACES = {CLIP: "images and texts (CLIP)", CLAP: "sounds and texts (CLAP)"}


def space_of(inputs: Mapping[str, Any]) -> str:
    """The space an `embed` or `rank` job's inputs are in: CLAP when it has sounds, CLIP when it has
    images, else the `space` it names (CLIP by default). `InvalidInput` naming the field when its
    inputs are in two spaces or not in the one it names."""
    asked = inputs.get("space") or ""
    if asked and asked not in SPACES:
        raise InvalidInput(f"space must be {' or '.join(repr(s) for s in SPACES)}, not {asked!r}", field="space")
    images, sounds = bool(inputs.get("images")), bool(inputs.get("sounds"))
    if images and sounds:
        raise InvalidInput("sounds: images and sounds are in no common space (images are embedded by "
                           "CLIP, sounds by CLAP, and their vectors cannot be compared): send them in "
                           "two jobs", field="sounds")
    found = CLAP if sounds else CLIP if images else asked or CLIP
    if asked and asked != found:
        field = "sounds" if sounds else "images"
        raise InvalidInput(f"{field}: space {asked!r} holds {SPACES[asked]}, not {field}; leave space out "
                           f"or name {found!r}", field=field)
    return found


def space_label(space: str, model: str) -> str:
    """What an embedding's `space` output says: the family and the model (two checkpoints of one
    family are two spaces too), e.g. `clap:laion/clap-htsat-unfused`."""
    return f"{space}:{model}"


def same_space(inputs: Mapping[str, Any]) -> None:
    """`rank_embeddings`: every candidate's space is the query's, when the job says both (embeddings
    are bare rows: nothing else tells a CLIP vector from a CLAP one of the same width)."""
    query_space = inputs.get("query_space") or ""
    if not query_space:
        return
    for i, space in enumerate(inputs.get("candidate_spaces") or ()):
        if space != query_space:
            raise InvalidInput(f"candidate_spaces[{i}]: {space!r} is not the query's space {query_space!r}: "
                               "vectors of two spaces cannot be compared", field=f"candidate_spaces[{i}]")
