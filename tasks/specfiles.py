"""Pipelines written as data: JSON or YAML documents, from a file, a folder, or a request.

    name: caption-and-translate
    inputs:
      image: {kind: image}
    steps:
      - {name: caption, task: caption, bind: {image: input.image}}
      - {name: translate, task: translate, bind: {text: caption.text}}
    outputs: {caption: caption.text, translation: translate.translation}

A template input is `{format: "Scenes: {captions.text}"}`; a fan-out is `each: {image: frames.images}`.
YAML is read with the safe loader: a document never builds Python objects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InvalidInput, InvalidPipeline
from .fields import Field, Kind
from .pipelines import Format, Pipeline, Step, step_to_dict
from .taskspec import TaskSpec

_FIELD_KEYS = {"kind", "description", "default", "minimum", "maximum", "multiple_of", "max_length", "many",
               "max_items", "size"}


def pipeline_from_dict(data: Any, tasks: Mapping[str, TaskSpec]) -> Pipeline:
    """A validated pipeline from its JSON/YAML form; errors name the part that is wrong."""
    if not isinstance(data, Mapping):
        raise InvalidPipeline(f"a pipeline spec is a mapping, got {type(data).__name__}")
    unknown = set(data) - {"name", "description", "inputs", "steps", "outputs"}
    if unknown:
        raise InvalidPipeline(f"pipeline spec has unknown keys: {', '.join(sorted(map(repr, unknown)))}")
    name = _text(data, "name", "pipeline")
    pipeline = Pipeline(
        name=name,
        description=str(data.get("description", "")),
        inputs={k: _field(name, k, v) for k, v in _mapping(data, "inputs", name).items()},
        steps=tuple(step_from_dict(name, i, s) for i, s in enumerate(_list(data, "steps", name))),
        outputs={str(k): str(v) for k, v in _mapping(data, "outputs", name).items()},
    )
    return pipeline.validate(tasks)


def load_pipeline_file(path: Path, tasks: Mapping[str, TaskSpec]) -> Pipeline:
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ValueError as exc:
        raise InvalidPipeline(f"{path}: not valid JSON: {exc}") from None
    except Exception as exc:  # yaml.YAMLError; yaml is imported only for YAML files
        raise InvalidPipeline(f"{path}: not valid YAML: {exc}") from None
    try:
        return pipeline_from_dict(data, tasks)
    except InvalidPipeline as exc:
        raise InvalidPipeline(f"{path}: {exc}") from None


def load_pipeline_folder(folder: Path, tasks: Mapping[str, TaskSpec]) -> dict[str, Pipeline]:
    """Every `*.yaml`, `*.yml` and `*.json` pipeline in `folder` (none when it does not exist)."""
    if not folder.is_dir():
        return {}
    found: dict[str, Pipeline] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in (".yaml", ".yml", ".json"):
            pipeline = load_pipeline_file(path, tasks)
            if pipeline.name in found or pipeline.name in tasks:
                raise InvalidPipeline(f"{path}: a pipeline or task named {pipeline.name!r} already exists")
            found[pipeline.name] = pipeline
    return found


def step_from_dict(pipeline: str, index: int, data: Any) -> Step:
    where = f"pipeline {pipeline!r}, step {index + 1}"
    if not isinstance(data, Mapping):
        raise InvalidPipeline(f"{where}: a step is a mapping with name, task, bind (and each)")
    unknown = set(data) - {"name", "task", "bind", "each"}
    if unknown:
        raise InvalidPipeline(f"{where}: unknown keys {', '.join(sorted(map(repr, unknown)))}")
    name = _text(data, "name", where)
    bind = {str(k): _binding(f"pipeline {pipeline!r}, step {name!r}", k, v)
            for k, v in _mapping(data, "bind", where).items()}
    each = {str(k): str(v) for k, v in _mapping(data, "each", where).items()}
    return Step(name=name, task=_text(data, "task", where), bind=bind, each=each)


def _binding(where: str, target: Any, value: Any) -> str | Format:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and set(value) == {"format"} and isinstance(value["format"], str):
        return Format(value["format"])
    raise InvalidPipeline(f"{where}: input {target!r} is bound to {value!r}; use 'STEP.OUTPUT', "
                          f"'input.NAME' or {{format: '...'}}")


def _field(pipeline: str, name: str, data: Any) -> Field:
    where = f"pipeline {pipeline!r}, input {name!r}"
    if not isinstance(data, Mapping) or "kind" not in data:
        raise InvalidPipeline(f"{where}: an input is a mapping with at least a kind")
    unknown = set(data) - _FIELD_KEYS
    if unknown:
        raise InvalidPipeline(f"{where}: unknown keys {', '.join(sorted(map(repr, unknown)))}")
    try:
        kind = Kind(data["kind"])
    except (ValueError, TypeError):
        raise InvalidPipeline(f"{where}: unknown kind {data['kind']!r}; kinds: "
                              f"{', '.join(k.value for k in Kind)}") from None
    _check_declaration(where, data)
    declared = Field(**{**data, "kind": kind})
    if not declared.required:  # the default must be a value the input accepts
        try:
            declared.check(name, declared.default)
        except InvalidInput as exc:
            raise InvalidPipeline(f"{where}: its default is not valid: {exc}") from None
    return declared


def _check_declaration(where: str, data: Mapping[str, Any]) -> None:
    """The parts of an input declaration that Field trusts: typed and in range, or refused here."""
    for key in ("minimum", "maximum"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise InvalidPipeline(f"{where}: {key} must be a finite number, got {value!r}")
    for key, least in (("multiple_of", 1), ("max_length", 0), ("max_items", 0), ("size", 1)):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise InvalidPipeline(f"{where}: {key} must be an integer of at least {least}, got {value!r}")
    if not isinstance(data.get("many", False), bool):
        raise InvalidPipeline(f"{where}: many must be true or false, got {data['many']!r}")
    if not isinstance(data.get("description", ""), str):
        raise InvalidPipeline(f"{where}: description must be text, got {data['description']!r}")


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidPipeline(f"{where}: {key!r} must be a non-empty string")
    return value


def _mapping(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise InvalidPipeline(f"{where}: {key!r} must be a mapping")
    return value


def _list(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list) or not value:
        raise InvalidPipeline(f"{where}: {key!r} must be a non-empty list")
    return value


def pipeline_to_dict(pipeline: Pipeline) -> dict[str, Any]:
    """The JSON form of a pipeline, which `pipeline_from_dict` reads back (to send it elsewhere)."""
    return {
        "name": pipeline.name,
        "description": pipeline.description,
        "inputs": {name: {k: v for k, v in spec.describe().items() if k != "required"}
                   for name, spec in pipeline.inputs.items()},
        "steps": [step_to_dict(step) for step in pipeline.steps],
        "outputs": dict(pipeline.outputs),
    }
