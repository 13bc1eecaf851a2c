"""A plan's text read back: terms parsed, identical sub-terms made one step, the pipeline checked.

    image = text2image(prompt=transcribe(audio=input.audio).text).image
    description = caption(image=text2image(prompt=transcribe(audio=input.audio).text).image).text

becomes three steps (transcribe, text2image, caption) and two outputs. The parser knows the syntax
only; whether the calls fit the catalogue is `Pipeline.validate`'s to say, so a text that does not
come from the grammar is refused with the same `InvalidPipeline` as any other pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import InvalidPipeline, NoPipelineFits
from ..fields import Field, Kind
from ..pipelines import Binding, Format, Pipeline, Step
from ..taskspec import TaskSpec

NONE = "none: "
NAME = re.compile(r"[a-z][a-z0-9_]*")
LITERAL = re.compile(r'"([^"\\{}\n]*)"')


@dataclass(frozen=True)
class CallTerm:
    """`task(name=term, ...).output`; `key` is the step it stands for (the call without its output)."""

    task: str
    args: tuple[tuple[str, Term], ...]
    output: str

    @property
    def key(self) -> tuple:
        return (self.task, tuple((name, _key(term)) for name, term in self.args))


@dataclass(frozen=True)
class FileTerm:
    """`input.NAME`: one of the supplied files."""

    name: str


@dataclass(frozen=True)
class LiteralTerm:
    """A quoted text constant."""

    text: str


Term = CallTerm | FileTerm | LiteralTerm


def _key(term: Term) -> object:
    return term.key if isinstance(term, CallTerm) else term


def plan_to_pipeline(text: str, tasks: Mapping[str, TaskSpec], pipelines: Mapping[str, Pipeline],
                     files: Mapping[str, Kind]) -> Pipeline:
    """The pipeline a plan's text stands for, validated; `NoPipelineFits` for a `none:` answer,
    `InvalidPipeline` for a text that is not a plan for these files."""
    del pipelines  # not calls of a plan (see grammar.plan_grammar)
    if text.startswith(NONE):
        raise NoPipelineFits(text[len(NONE):].strip() or "the planner gave no reason")
    lines = [_parse_line(line) for line in text.split("\n")]
    return _Builder(files).pipeline(lines).validate(tasks)


def _parse_line(line: str) -> tuple[str, CallTerm]:
    name, sep, rest = line.partition(" = ")
    if not sep or not NAME.fullmatch(name):
        raise InvalidPipeline(f"plan line {line!r} is not 'NAME = TERM'")
    parser = _Parser(rest)
    term = parser.term()
    if parser.pos != len(rest):
        raise InvalidPipeline(f"plan line {line!r}: unexpected {rest[parser.pos:]!r}")
    if not isinstance(term, CallTerm):
        raise InvalidPipeline(f"plan line {line!r}: an output must be a task's output")
    return name, term


class _Parser:
    """Recursive descent over one term; `pos` is where it stopped."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def term(self) -> Term:
        literal = LITERAL.match(self.text, self.pos)
        if literal:
            if not literal.group(1).strip():
                raise InvalidPipeline(f"plan term {self.text!r}: an empty text literal")
            self.pos = literal.end()
            return LiteralTerm(literal.group(1))
        name = self._name()
        if name == "input" and self._take("."):
            return FileTerm(self._name())
        self._expect("(")
        args: list[tuple[str, Term]] = []
        while not self._take(")"):
            if args:
                self._expect(", ")
            arg = self._name()
            self._expect("=")
            args.append((arg, self.term()))
        self._expect(".")
        return CallTerm(name, tuple(args), self._name())

    def _name(self) -> str:
        found = NAME.match(self.text, self.pos)
        if not found:
            raise InvalidPipeline(f"plan term {self.text!r}: a name expected at {self.text[self.pos:][:20]!r}")
        self.pos = found.end()
        return found.group()

    def _take(self, token: str) -> bool:
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def _expect(self, token: str) -> None:
        if not self._take(token):
            raise InvalidPipeline(f"plan term {self.text!r}: {token!r} expected at {self.text[self.pos:][:20]!r}")


class _Builder:
    """Steps from terms: one step per distinct call, named after its task (`caption`, `caption_2`)."""

    def __init__(self, files: Mapping[str, Kind]) -> None:
        self.files = files
        self.steps: dict[tuple, Step] = {}
        self.inputs: dict[str, Field] = {}

    def pipeline(self, lines: list[tuple[str, CallTerm]]) -> Pipeline:
        outputs: dict[str, str] = {}
        for name, term in lines:
            ref = self._bind(term)
            while name in outputs:  # the grammar cannot keep names apart: the second gets a suffix
                name += "_2"
            outputs[name] = ref
        files_used = {name: self.inputs[name] for name in self.files if name in self.inputs}
        return Pipeline(name="plan", inputs=files_used, steps=tuple(self.steps.values()), outputs=outputs,
                        description="A pipeline planned from a request in words.")

    def _bind(self, term: Term) -> Binding:
        if isinstance(term, LiteralTerm):
            return Format(term.text)  # no braces (the grammar has none): no placeholder
        if isinstance(term, FileTerm):
            if term.name not in self.files:
                raise InvalidPipeline(f"plan uses input.{term.name}, which is not one of the files "
                                      f"({', '.join(self.files) or 'none'})")
            kind = self.files[term.name]
            self.inputs[term.name] = Field(kind, f"The supplied {kind.value} file.")
            return f"input.{term.name}"
        return f"{self._step(term)}.{term.output}"

    def _step(self, term: CallTerm) -> str:
        if term.key not in self.steps:
            bind = {name: self._bind(arg) for name, arg in term.args}
            taken = {step.name for step in self.steps.values()}
            name, n = term.task, 1
            while name in taken:
                n += 1
                name = f"{term.task}_{n}"
            self.steps[term.key] = Step(name=name, task=term.task, bind=bind)
        return self.steps[term.key].name
