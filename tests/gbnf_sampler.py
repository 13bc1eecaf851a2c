"""Random sentences of a GBNF grammar, read from its text: the grammar the planner hands the
constrained decoder, not the data it was written from.

Reads the subset the planner writes: one rule a line, `name ::= alt | alt`, each alternative a
sequence of JSON-quoted strings, nonterminal names and character classes (`[a-z0-9_]`, ranges and
single characters, no escapes) with an optional `{m,n}`.
"""

from __future__ import annotations

import json
import random
import re

TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(\[[^\]]*\])(?:\{(\d+),(\d+)\})?|(\|)|([A-Za-z_][\w-]*))')


def parse(grammar: str) -> dict[str, list[list[object]]]:
    rules: dict[str, list[list[object]]] = {}
    for line in grammar.strip().splitlines():
        name, _, body = line.partition(" ::= ")
        alternatives: list[list[object]] = [[]]
        pos = 0
        while pos < len(body):
            found = TOKEN.match(body, pos)
            assert found and found.end() > pos, f"cannot read {body[pos:]!r}"
            pos = found.end()
            quoted, chars, least, most, bar, ref = found.groups()
            if bar:
                alternatives.append([])
            elif quoted:
                alternatives[-1].append(json.loads(quoted))
            elif chars:
                alternatives[-1].append((_characters(chars[1:-1]), int(least or 1), int(most or 1)))
            else:
                alternatives[-1].append(("ref", ref))
        rules[name] = alternatives
    return rules


def _characters(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            out += [chr(c) for c in range(ord(body[i]), ord(body[i + 2]) + 1)]
            i += 3
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def sample(rules: dict[str, list[list[object]]], rng: random.Random, start: str = "root") -> str:
    """One sentence, each alternative and repeat count chosen uniformly."""
    out: list[str] = []
    for symbol in rng.choice(rules[start]):
        if isinstance(symbol, str):
            out.append(symbol)
        elif symbol[0] == "ref":
            out.append(sample(rules, rng, symbol[1]))
        else:
            characters, least, most = symbol
            out.append("".join(rng.choice(characters) for _ in range(rng.randint(least, most))))
    return "".join(out)
