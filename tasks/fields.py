"""Typed inputs and outputs: what a task accepts, checked where it is first known.

A `Field` checks one value; `check_inputs` checks a whole mapping against a schema, naming the
offending input (and the likely intended one, for a misspelling).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .artifacts import ArtifactRef
from .errors import InvalidInput


class Kind(str, Enum):
    """What a value is; artifact kinds are named after their media type family."""

    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    JSON = "json"  # structured output: segments, rankings
    EMBEDDING = "embedding"  # vectors: inline rows of floats, or an .npy artifact when large
    MESH = "mesh"  # a 3D mesh file: PLY (model/ply) or glTF binary (model/gltf-binary)
    ARRAY = "array"  # an n-dimensional array of numbers, as an .npy file (a raw depth map)

    @property
    def is_artifact(self) -> bool:
        return self in (Kind.IMAGE, Kind.AUDIO, Kind.VIDEO, Kind.MESH, Kind.ARRAY)

    def accepts(self, media_type: str) -> bool:
        """Whether a file of `media_type` can stand for this kind (a video carries audio)."""
        family = media_type.split("/", 1)[0]
        if self is Kind.MESH:
            return family == "model"
        if self is Kind.ARRAY:
            return media_type == "application/x-npy"
        return family == self.value or (self is Kind.AUDIO and family == "video")


@dataclass(frozen=True)
class Field:
    """One named input: its kind, whether it is required, its default and its bounds."""

    kind: Kind
    description: str = ""
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: int | None = None
    max_length: int | None = None
    many: bool = False  # a list of values of `kind`
    max_items: int | None = None
    # Each value is a tuple of this many numbers, e.g. 2 for [x, y] points, 4 for [x0, y0, x1, y1]
    # boxes (numbers only; `minimum`/`maximum` bound every coordinate).
    size: int | None = None

    @property
    def required(self) -> bool:
        return self.default is None

    def check(self, name: str, value: Any) -> Any:
        """The value, normalised (an int given as 3.0 stays rejected: no silent correction)."""
        if self.many:
            return self._check_list(name, value)
        return self.check_one(name, value)

    def check_one(self, name: str, value: Any) -> Any:
        """One value of this field's kind (one item, for a list field)."""
        if self.size is not None:
            return self._check_tuple(name, value)
        if self.kind is Kind.TEXT:
            return self._check_text(name, value)
        if self.kind in (Kind.INTEGER, Kind.NUMBER):
            return self._check_number(name, value)
        if self.kind.is_artifact:
            return self._check_artifact(name, value)
        if self.kind is Kind.EMBEDDING:
            return self._check_embedding(name, value)
        return value  # JSON is produced by workers

    def parse(self, name: str, raw: str) -> Any:
        """Turn a command-line string into this field's kind, then check it."""
        if self.size is not None:  # "10,20" on a command line: one [x, y] point
            try:
                numbers = [float(part) for part in raw.split(",")]
            except ValueError:
                raise InvalidInput(f"{name} must be {self.size} numbers separated by commas, got {raw!r}",
                                   field=name) from None
            try:
                return self.check_one(name, numbers)
            except InvalidInput as exc:  # named by the input typed, not by a coordinate's index
                raise InvalidInput(f"{name}={raw}: {exc}", field=name) from None
        if self.kind is Kind.INTEGER:
            try:
                return self.check_one(name, int(raw))
            except ValueError:
                raise InvalidInput(f"{name} must be an integer, got {raw!r}", field=name) from None
        if self.kind is Kind.NUMBER:
            try:
                return self.check_one(name, float(raw))
            except ValueError:
                raise InvalidInput(f"{name} must be a number, got {raw!r}", field=name) from None
        if self.kind.is_artifact:
            raise InvalidInput(f"{name} is a file input: pass it as {name}=@PATH", field=name)
        return self.check_one(name, raw)

    def describe(self) -> dict[str, Any]:
        """JSON-schema-like description for catalogues."""
        out: dict[str, Any] = {"kind": self.kind.value, "required": self.required}
        if self.many:
            out["many"] = True
        if self.description:
            out["description"] = self.description
        if not self.required:
            out["default"] = list(self.default) if isinstance(self.default, tuple) else self.default
        for key in ("minimum", "maximum", "multiple_of", "max_length", "max_items", "size"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def _check_list(self, name: str, value: Any) -> list[Any]:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise InvalidInput(f"{name} must be a list of {self.kind.value} values, got "
                               f"{type(value).__name__}", field=name)
        if self.required and not value:
            raise InvalidInput(f"{name} must have at least one item", field=name)
        if self.max_items is not None and len(value) > self.max_items:
            raise InvalidInput(f"{name} has {len(value)} items, over the limit of {self.max_items}", field=name)
        return [self.check_one(f"{name}[{i}]", item) for i, item in enumerate(value)]

    def _check_text(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise InvalidInput(f"{name} must be text, got {type(value).__name__}", field=name)
        if (self.required or self.many) and not value.strip():
            raise InvalidInput(f"{name} must not be empty", field=name)
        if self.max_length is not None and len(value) > self.max_length:
            raise InvalidInput(
                f"{name} is {len(value)} characters, over the limit of {self.max_length}", field=name
            )
        return value

    def _check_number(self, name: str, value: Any) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            what = "an integer" if self.kind is Kind.INTEGER else "a number"
            raise InvalidInput(f"{name} must be {what}, got {value!r}", field=name)
        if self.kind is Kind.INTEGER and not isinstance(value, int):
            raise InvalidInput(f"{name} must be an integer, got {value!r}", field=name)
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every bound check
            raise InvalidInput(f"{name} must be a finite number, got {value!r}", field=name)
        if self.minimum is not None and value < self.minimum:
            raise InvalidInput(f"{name} must be at least {_num(self.minimum)} but is {value}", field=name)
        if self.maximum is not None and value > self.maximum:
            raise InvalidInput(f"{name} must be at most {_num(self.maximum)} but is {value}", field=name)
        if self.multiple_of is not None and value % self.multiple_of:
            raise InvalidInput(
                f"{name} must be a multiple of {self.multiple_of} but is {value}", field=name
            )
        return float(value) if self.kind is Kind.NUMBER else value

    def _check_tuple(self, name: str, value: Any) -> list[float]:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)) \
                or len(value) != self.size:
            raise InvalidInput(f"{name} must be a list of {self.size} numbers, got {value!r}", field=name)
        scalar = Field(Kind.NUMBER, minimum=self.minimum, maximum=self.maximum)
        return [scalar.check_one(f"{name}[{i}]", x) for i, x in enumerate(value)]

    def _check_embedding(self, name: str, value: Any) -> list[list[float]] | ArtifactRef:
        """Rows of numbers inline, or an .npy artifact."""
        if ArtifactRef.is_ref(value) or isinstance(value, ArtifactRef):
            ref = ArtifactRef.from_dict(value, field=name) if isinstance(value, Mapping) else value
            if ref.media_type != "application/x-npy":
                raise InvalidInput(f"{name} must be an .npy embedding artifact, got {ref.media_type}", field=name)
            return ref
        if not is_matrix(value):
            raise InvalidInput(f"{name} must be an embedding: a list of rows of numbers", field=name)
        return value

    def _check_artifact(self, name: str, value: Any) -> ArtifactRef:
        if isinstance(value, Mapping):
            value = ArtifactRef.from_dict(value, field=name)
        if not isinstance(value, ArtifactRef):
            raise InvalidInput(f"{name} must be {_article(self.kind.value)} artifact, got {type(value).__name__}",
                               field=name)
        if not self.kind.accepts(value.media_type):
            raise InvalidInput(
                f"{name} must be {_article(self.kind.value)}, got a file of type {value.media_type}", field=name
            )
        return value


def is_matrix(value: Any) -> bool:
    """A non-empty list of non-empty rows of numbers: an inline embedding."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(row, list) and row and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row)
        for row in value)


def check_inputs(schema: Mapping[str, Field], inputs: Mapping[str, Any], *, where: str,
                 one_of: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every input checked, defaults filled in; unknown and missing names are errors, and so is
    giving none of the inputs in `one_of` (e.g. ranking with no candidates)."""
    for name in inputs:
        if name not in schema:
            raise InvalidInput(f"{where} has no input {name!r}{_did_you_mean(name, schema)}; "
                               f"its inputs are: {', '.join(schema)}", field=name)
    checked: dict[str, Any] = {}
    for name, spec in schema.items():
        if name in inputs and inputs[name] is not None:
            checked[name] = spec.check(name, inputs[name])
        elif spec.required:
            raise InvalidInput(f"{where} needs the input {name!r} ({spec.kind.value})", field=name)
        else:
            checked[name] = list(spec.default) if spec.many else spec.default
    if one_of and not any(checked.get(name) for name in one_of):
        raise InvalidInput(f"{where} needs at least one of {' or '.join(one_of)}", field=one_of[0])
    return checked


def _article(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _did_you_mean(name: str, choices: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def field_from_description(data: Mapping[str, Any]) -> Field:
    """The inverse of `Field.describe`: a schema read from a catalogue (the gateway's, over HTTP)."""
    default = None if data.get("required", True) else data.get("default")
    return Field(kind=Kind(data["kind"]), description=data.get("description", ""),
                 default=tuple(default) if isinstance(default, list) else default,
                 minimum=data.get("minimum"), maximum=data.get("maximum"), multiple_of=data.get("multiple_of"),
                 max_length=data.get("max_length"), many=bool(data.get("many")), max_items=data.get("max_items"),
                 size=data.get("size"))
