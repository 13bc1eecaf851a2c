"""What an ask is made of on the client side: the kind of each input, told by what it is."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmq.tasks.artifacts import ArtifactRef
from mmq.tasks.asking import kind_of_value
from mmq.tasks.errors import InvalidInput
from mmq.tasks.fields import Kind
from mmq.tasks.media_types import sniff_media_type

from .artifact import Artifact

_SNIFF_BYTES = 64 * 1024  # enough of a file to tell its type


def ask_values(inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Kind]]:
    """The inputs of an ask as it is submitted, and the kind of each: a file (a Path, bytes, an
    uploaded or stored artifact) by its content's media type, a text file as its text; a str is
    text (pass a file as a Path), a number a number."""
    values: dict[str, Any] = {}
    kinds: dict[str, Kind] = {}
    for name, value in inputs.items():
        media_type = _media_type(name, value)
        if media_type == "text/plain" and isinstance(value, (bytes, Path)):
            value, media_type = _text(name, value), None
        values[name], kinds[name] = value, kind_of_value(name, value, media_type)
    return values, kinds


def _text(name: str, value: bytes | Path) -> str:
    try:
        data = value if isinstance(value, bytes) else value.read_bytes()
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{name}: cannot read it as UTF-8 text: {exc}", field=name) from None


def _media_type(name: str, value: Any) -> str | None:
    if isinstance(value, Artifact):
        return value.ref.media_type
    if isinstance(value, ArtifactRef):
        return value.media_type
    if isinstance(value, Mapping):
        if ArtifactRef.is_ref(value):
            return ArtifactRef.from_dict(value).media_type
        if "media_type" in value:  # an upload the gateway resolved
            return str(value["media_type"])
        raise InvalidInput(f"{name}: a file input is a path, bytes or an artifact reference", field=name)
    if isinstance(value, bytes):
        return sniff_media_type(value[:_SNIFF_BYTES])
    if isinstance(value, Path):
        try:
            with value.open("rb") as file:
                return sniff_media_type(file.read(_SNIFF_BYTES))
        except OSError as exc:
            raise InvalidInput(f"{name}: cannot read {str(value)!r}: {exc.strerror}", field=name) from None
    return None
