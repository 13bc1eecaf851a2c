"""The plan grammar: a context-free language in which every sentence is a runnable pipeline.

A plan is one line per output, each a nested term whose sub-terms have kinds:

    image = text2image(prompt=transcribe(audio=input.audio).text).image
    description = caption(image=text2image(prompt=transcribe(audio=input.audio).text).image).text

or the answer `none: <reason>`. Validity is made context-free by giving every kind its own
nonterminals: a call's required inputs are sub-terms of kinds that fit them (`pipelines.fits`),
leaves are the supplied files (`input.NAME`) and, for single text inputs, a short quoted literal.
Nesting is bounded (`DEPTH` calls deep, `MAX_LINES` lines, literals and names of bounded length), so
the language is finite and `max_chars` says how long its longest sentence is: a generation given
that many tokens cannot be cut off before it ends.

The grammar is written in GBNF (`::=`, quoted strings, character classes with `{m,n}`), which
llguidance (the plan worker's constrained decoder) and xgrammar both read as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from ..fields import Kind
from ..pipelines import Pipeline, fits
from ..taskspec import TaskSpec
from .calls import Call, bindable, calls

DEPTH = 4  # calls nested at most this deep: transcribe -> summarize -> text2image -> caption
MAX_LINES = 4  # outputs of one plan
NAME_CHARS = 24  # an output's name
LITERAL_CHARS = 48  # a quoted text constant, e.g. a prompt the request spells out
REASON_CHARS = 160  # the reason of a `none:` answer
# Characters of a literal: no quote, backslash, brace (a Format placeholder) or newline.
LITERAL_CLASS = "a-zA-Z0-9 ,.'!?;:"
LITERAL_FIRST = "a-zA-Z0-9"  # not blank: a required text input must not be empty
REASON_CLASS = " -~"  # printable ASCII


@dataclass(frozen=True)
class Chars:
    """Between `least` and `most` characters of a GBNF class body such as "a-z0-9_"."""

    body: str
    least: int
    most: int


@dataclass(frozen=True)
class Ref:
    """A nonterminal."""

    name: str


Symbol = str | Chars | Ref  # a str is a terminal, written as it is
Rules = dict[str, list[tuple[Symbol, ...]]]


def plan_grammar(tasks: Mapping[str, TaskSpec], pipelines: Mapping[str, Pipeline], files: Mapping[str, Kind]) -> str:
    """The GBNF grammar of the plans for these files. Pipelines are not (yet) calls of a plan:
    `pipelines` is accepted for the contract's sake and unused (docs/planning.md)."""
    del pipelines
    return render(plan_rules(tasks, files))


def plan_rules(tasks: Mapping[str, TaskSpec], files: Mapping[str, Kind]) -> Rules:
    """The grammar as data: nonterminal -> alternatives (what `render` writes and `max_chars` measures)."""
    rules: Rules = {
        "root": [(Ref("plan"),), (Ref("none"),)],
        "none": [("none: ", Chars("!-~", 1, 1), Chars(REASON_CLASS, 0, REASON_CHARS - 1))],
        "line": [(Ref("name"), " = ", Ref("expr"))],
        "name": [(Chars("a-z", 1, 1), Chars("a-z0-9_", 0, NAME_CHARS - 1))],
        "literal": [('"', Chars(LITERAL_FIRST, 1, 1), Chars(LITERAL_CLASS, 0, LITERAL_CHARS - 1), '"')],
    }
    rules["plan"] = [_lines(n) for n in range(1, MAX_LINES + 1)]
    signatures = list(calls(tasks))
    args = _args(rules, 0, files)
    for depth in range(1, DEPTH + 1):
        _calls(rules, depth, signatures, args)
        args = _args(rules, depth, files)
    tops = [(Ref(name),) for name in rules if name.endswith(f"_{DEPTH}") and name.startswith(("one_", "many_"))]
    rules["expr"] = tops  # empty only for an empty catalogue: then a plan can only say none
    if not tops:
        del rules["expr"], rules["line"], rules["plan"]
        rules["root"] = [(Ref("none"),)]
    return rules


def _lines(count: int) -> tuple[Symbol, ...]:
    symbols: list[Symbol] = [Ref("line")]
    for _ in range(count - 1):
        symbols += ["\n", Ref("line")]
    return tuple(symbols)


def _calls(rules: Rules, depth: int, signatures: list[Call], args: Mapping[tuple[Kind, bool], str]) -> None:
    """The calls of level `depth`, their inputs terms of level `depth - 1`; a call some input of which
    no term can give is left out."""
    for call in signatures:
        wanted = [(name, (field.kind, field.many)) for name, field in call.args]
        if not all(bindable(field) for _, field in call.args) or any(key not in args for _, key in wanted):
            continue
        head: list[Symbol] = [f"{call.name}("]
        for i, (name, key) in enumerate(wanted):
            head += [f"{', ' if i else ''}{name}=", Ref(args[key])]
        for output, spec in call.outputs():
            kind_rule = f"{'many' if spec.many else 'one'}_{spec.kind.value}_{depth}"
            rules.setdefault(kind_rule, []).append((*head, f").{output}"))


def _args(rules: Rules, depth: int, files: Mapping[str, Kind]) -> dict[tuple[Kind, bool], str]:
    """For each (kind, list or not) an input may want, the nonterminal of the terms that fit it at
    this level (calls of this level, files, literals), when there is at least one."""
    made: dict[tuple[Kind, bool], str] = {}
    for kind in Kind:
        for many in (False, True):
            alternatives: list[tuple[Symbol, ...]] = []
            for source in (k for k in Kind if fits(k, kind)):
                shapes = ("one", "many") if many else ("one",)  # a value feeds a list, never the reverse
                alternatives += [(Ref(f"{s}_{source.value}_{depth}"),) for s in shapes
                                 if f"{s}_{source.value}_{depth}" in rules]
                alternatives += [(f"input.{name}",) for name, k in files.items() if k is source]
            if kind is Kind.TEXT and not many:
                alternatives.append((Ref("literal"),))  # a Format binding: single text inputs only
            if alternatives:
                name = f"arg{'s' if many else ''}_{kind.value}_{depth}"
                rules[name] = alternatives
                made[(kind, many)] = name
    return made


def render(rules: Rules) -> str:
    """The rules in GBNF, root first."""
    return "\n".join(f"{name} ::= " + " | ".join(" ".join(_symbol(s) for s in alt) for alt in alts)
                     for name, alts in rules.items()) + "\n"


def _symbol(symbol: Symbol) -> str:
    if isinstance(symbol, Ref):
        return symbol.name
    if isinstance(symbol, Chars):
        if symbol.least == symbol.most == 1:
            return f"[{symbol.body}]"
        return f"[{symbol.body}]{{{symbol.least},{symbol.most}}}"
    return json.dumps(symbol)


def max_chars(rules: Rules) -> int:
    """The length of the longest sentence (the grammar is finite: no rule reaches itself)."""

    @cache
    def longest(name: str) -> int:
        return max(sum(_longest_symbol(s, longest) for s in alt) for alt in rules[name])

    return longest("root")


def _longest_symbol(symbol: Symbol, longest) -> int:
    if isinstance(symbol, Ref):
        return longest(symbol.name)
    if isinstance(symbol, Chars):
        return symbol.most
    return len(symbol)
