"""Text cut into pieces a text-to-speech model says well: sentences, and long sentences at commas.

VITS reads a whole piece at once (its attention is over every character), and MMS-TTS was trained
on sentences: a long text in one piece costs memory quadratic in its length and is read worse.
"""

from __future__ import annotations

import re

# A sentence ends at ., ! or ? (or …) before white space and no lower-case letter (so "the U.S.
# is" stays whole), or at a line break.
SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?![a-z])|\s*\n\s*")
# Inside a long sentence: after a comma, semicolon, colon or dash, before white space.
CLAUSE_END = re.compile(r"(?<=[,;:–—])\s+")
WORD_GAP = re.compile(r"\s+")


def split_for_speech(text: str, max_chars: int) -> list[str]:
    """`text` as non-empty pieces of at most `max_chars` characters, in order, cut at sentence
    ends, else at clause ends, else between words (a single longer word is cut where it must be)."""
    pieces: list[str] = []
    for sentence in _parts(SENTENCE_END, text):
        if len(sentence) <= max_chars:
            pieces.append(sentence)
        else:
            pieces.extend(_pack(_parts(CLAUSE_END, sentence), max_chars))
    return pieces


def _pack(parts: list[str], max_chars: int) -> list[str]:
    # Consecutive parts joined while they fit: a list of short clauses is not read one by one.
    packed: list[str] = []
    for part in parts:
        if len(part) > max_chars:
            packed.extend(_pack_words(part, max_chars))
        elif packed and len(packed[-1]) + 1 + len(part) <= max_chars:
            packed[-1] += " " + part
        else:
            packed.append(part)
    return packed


def _pack_words(clause: str, max_chars: int) -> list[str]:
    words = [chunk for word in _parts(WORD_GAP, clause)
             for chunk in (word[i : i + max_chars] for i in range(0, len(word), max_chars))]
    return _pack(words, max_chars)


def _parts(separator: re.Pattern[str], text: str) -> list[str]:
    return [part for part in (p.strip() for p in separator.split(text)) if part]
