"""Summarization with a BART-family model (bart-large-cnn): text in, summary out, of any length.

Text longer than the encoder reads at once is cut into chunks at sentence ends, each chunk is
summarized, and the chunk summaries are summarized together: again in chunks if they are still
too long, for a bounded number of rounds. No text is ever truncated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mmq.tasks.errors import InvalidInput, MMQError
from mmq.workers.models import model_source
from mmq.workers.specialisation_base import Progress, Specialisation

from .chunking import Chunk, sentences
from .model import Seq2Seq, Tally
from .tiny import build_tiny_bart

logger = logging.getLogger(__name__)

# A chunk's summary is at most this fraction of a chunk: chunks are over half full on average, so
# each round at least halves the text and summaries of summaries converge.
SHRINK = 4
# Rounds of summarizing chunk summaries before giving up: 100,000 characters need about 2 with
# bart-large-cnn, 5 with the tiny model.
MAX_ROUNDS = 8


class SummarizeSpecialisation(Specialisation):
    """Summarizes text with `AutoModelForSeq2SeqLM.generate()`, chunk by chunk when it is long."""

    seq2seq: Seq2Seq
    budget: int  # text tokens per chunk

    def setup(self) -> None:
        source = model_source(self.context, kind="bart", build=build_tiny_bart)
        self.seq2seq = Seq2Seq.load(source, self.context.device)
        self.budget = self.seq2seq.chunk_budget()
        logger.info("summarize: chunks of up to %d tokens", self.budget)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        """1. check inputs: `InvalidInput` naming the first bad value."""
        text, max_tokens, min_tokens = inputs["text"], inputs["max_tokens"], inputs["min_tokens"]
        if not text.strip():
            raise InvalidInput("text must not be empty", field="text")
        limit = self.seq2seq.max_new_tokens
        if max_tokens > limit:
            raise InvalidInput(f"max_tokens must be at most {limit} for this model but is {max_tokens}",
                               field="max_tokens")
        if min_tokens > max_tokens:
            raise InvalidInput(
                f"min_tokens ({min_tokens}) must not be greater than max_tokens ({max_tokens})",
                field="min_tokens",
            )
        return inputs

    def infer(self, task: str, batch: list[Mapping[str, Any]], progress: Progress) -> list[dict[str, Any]]:
        # 2. chunk: every job now, so that progress knows the first round's total
        chunked = [self.seq2seq.chunk(job["text"], self.budget) for job in batch]
        tally = Tally(progress)
        for chunks in chunked:
            tally.expect(_passes(len(chunks)))
        summaries = [self._summarize(chunks, job, tally) for chunks, job in zip(chunked, batch)]
        # The sentences too: a pipeline fans out over them (storyboard: one picture each).
        return [{"summary": summary, "sentences": sentences(summary)} for summary in summaries]

    def _summarize(self, chunks: list[Chunk], job: Mapping[str, Any], tally: Tally) -> str:
        rounds = 0
        while len(chunks) > 1:
            if rounds == MAX_ROUNDS:
                raise MMQError(f"summarize: the summaries were still {len(chunks)} chunks after {rounds} "
                               "rounds; nothing was truncated")
            chunks = self._combine(chunks, job, tally)
            tally.expect(_passes(len(chunks)) - 1)  # the combining pass expected before is among these
            rounds += 1
        return self._final(chunks[0], job, tally)

    def _combine(self, chunks: list[Chunk], job: Mapping[str, Any], tally: Tally) -> list[Chunk]:
        # 3. encode, 4. generate, 5. decode: one short summary per chunk, a quarter chunk at most.
        max_new_tokens = min(job["max_tokens"], self.budget // SHRINK)
        summaries = self.seq2seq.generate(
            [chunk.text for chunk in chunks],
            tally.advance,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min(job["min_tokens"], max_new_tokens),
        )
        # 6. combine: the chunk summaries, one per line, are the next round's text.
        combined = "\n".join(summary.text for summary in summaries if summary.text)
        if not combined:
            raise MMQError(f"summarize: the model produced an empty summary for each of {len(chunks)} chunks")
        logger.info("summarize: %d chunks summarized in %d characters", len(chunks), len(combined))
        return self.seq2seq.chunk(combined, self.budget)

    def _final(self, chunk: Chunk, job: Mapping[str, Any], tally: Tally) -> str:
        [summary] = self.seq2seq.generate(
            [chunk.text], tally.advance, max_new_tokens=job["max_tokens"], min_new_tokens=job["min_tokens"]
        )
        if not summary.text:
            raise MMQError("summarize: the model produced an empty summary")
        return summary.text


def _passes(chunks: int) -> int:
    """Generations a round of `chunks` needs: one per chunk, and one to combine them if several."""
    return chunks + 1 if chunks > 1 else chunks
