"""Cutting long text into pieces a seq2seq model can read whole: by tokens, at sentence ends.

The text is tokenized once; each token's character offset says where a cut between tokens falls in
the text. A piece ends at the last sentence end that keeps it within the token budget, else at the
last word end, else (one "word" longer than the budget) between two tokens; optionally at every
line end too. Nothing is dropped: the pieces and the whitespace between them make up the whole text
again.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

# Where a sentence ends: terminal punctuation (closing quotes and brackets included) followed by
# whitespace, or a line break. The cut goes right after the punctuation.
SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’»)\]]*(?=\s)|(?=\n)")
WORD_END = re.compile(r"\S(?=\s)")
LINE_END = re.compile(r"\S(?=[^\S\n]*\n)")


@dataclass(frozen=True)
class Chunk:
    """A piece of the text, stripped, and the whitespace that followed it there."""

    text: str
    separator: str


def sentences(text: str) -> list[str]:
    """The sentences of `text`, in order, stripped; text with no sentence end is one sentence."""
    cuts = [0, *(m.end() for m in SENTENCE_END.finditer(text)), len(text)]
    return [piece for start, end in zip(cuts, cuts[1:]) if (piece := text[start:end].strip())]


def split_by_tokens(
    text: str, starts: Sequence[int], budget: int, *, break_lines: bool = False
) -> list[Chunk]:
    """Cut `text` into chunks of at most `budget` tokens (+/- a few where re-tokenized).

    `starts[i]` is the character offset where token i of `text` begins (non-decreasing), as a
    tokenizer's offset mapping gives it. With `break_lines`, every line ends a chunk too, so that
    outputs joined with `join` keep the text's lines and paragraphs.
    """
    if budget < 1:
        raise ValueError(f"budget must be at least 1 token but is {budget}")
    if not starts:  # nothing the tokenizer reads (whitespace): one chunk, or none
        return _pieces(text, [0, len(text)])
    line_ends = [m.end() for m in LINE_END.finditer(text)] if break_lines else []
    sentence_ends = [m.end() for m in SENTENCE_END.finditer(text)]
    word_ends = [m.end() for m in WORD_END.finditer(text)]
    cuts = [0]  # character offsets where chunks begin
    first = 0  # token where the current chunk begins
    while True:
        cut = _first_cut(starts, line_ends, first, min(first + budget, len(starts) - 1))
        if cut is None and len(starts) - first <= budget:
            break
        last = first + budget  # the chunk may end before this token, not after
        cut = cut or _last_cut(starts, sentence_ends, first, last)
        cut = cut or _last_cut(starts, word_ends, first, last)
        first = cut or _next_start(starts, first, last)
        cuts.append(starts[first])
    return _pieces(text, [*cuts, len(text)])


def join(chunks: Sequence[Chunk], outputs: Sequence[str]) -> str:
    """Outputs in the chunks' order, separated as the chunks were (a paragraph break stays one)."""
    parts = [output + chunk.separator for chunk, output in zip(chunks, outputs, strict=True)]
    return "".join(parts).strip()


def _first_cut(starts: Sequence[int], boundaries: Sequence[int], first: int, last: int) -> int | None:
    """The token in (first, last] that starts the text after the first boundary there, if any."""
    i = bisect_right(boundaries, starts[first])
    if i == len(boundaries) or boundaries[i] > starts[last]:
        return None
    return bisect_left(starts, boundaries[i], first + 1, last + 1)


def _last_cut(starts: Sequence[int], boundaries: Sequence[int], first: int, last: int) -> int | None:
    """The token in (first, last] that starts the text after the last boundary there, if any."""
    i = bisect_right(boundaries, starts[last]) - 1
    if i < 0 or boundaries[i] <= starts[first]:
        return None
    return bisect_left(starts, boundaries[i], first + 1, last + 1)


def _next_start(starts: Sequence[int], first: int, last: int) -> int:
    # No boundary in reach: cut between tokens, but never inside a character (byte-level BPE
    # spends several tokens on one character, all with the same offset) and always forward.
    cut = last
    while cut > first + 1 and starts[cut] == starts[cut - 1]:
        cut -= 1
    while cut < len(starts) - 1 and starts[cut] <= starts[first]:
        cut += 1
    return cut


def _pieces(text: str, cuts: list[int]) -> list[Chunk]:
    spans = []  # each piece's text without the whitespace around it
    for begin, end in zip(cuts, cuts[1:]):
        piece = text[begin:end]
        if piece.strip():
            spans.append((begin + len(piece) - len(piece.lstrip()), begin + len(piece.rstrip())))
    next_starts = [start for start, _ in spans[1:]] + [spans[-1][1]] if spans else []
    return [Chunk(text[start:end], text[end:after]) for (start, end), after in zip(spans, next_starts)]
