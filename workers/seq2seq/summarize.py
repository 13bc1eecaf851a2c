"""Summarization with a BART-family model (bart-large-cnn): text in, summary out, of any length.

Text longer than the encoder reads at once is cut into chunks at sentence ends, each chunk is
summarized, and the chunk summaries are summarized together: again in chunks if they are still
too long, for a bounded number of rounds. No text is ever truncated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

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


@dataclass
class _Summary:
    """One job on its way: its text's current chunks, the rounds of combining so far, its summary."""

    job: Mapping[str, Any]
    chunks: list[Chunk]
    rounds: int = 0
    summary: str | None = None  # set by the final pass, on the one chunk left

    def options(self, budget: int) -> tuple[int, int]:
        """(max_new_tokens, min_new_tokens) of this job's next pass."""
        if len(self.chunks) == 1:  # the final summary, as long as the job asked
            return self.job["max_tokens"], self.job["min_tokens"]
        # one short summary per chunk, a quarter chunk at most
        max_new_tokens = min(self.job["max_tokens"], budget // SHRINK)
        return max_new_tokens, min(self.job["min_tokens"], max_new_tokens)


class SummarizeSpecialisation(Specialisation):
    """Summarizes text with `AutoModelForSeq2SeqLM.generate()`, chunk by chunk when it is long."""

    # Several jobs' passes share `generate()` calls, round by round, those with equal token limits
    # together (beam search ends beams by the limit, so a call has one).
    batchable: ClassVar[frozenset[str]] = frozenset({"summarize"})

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
        jobs = [_Summary(job, self.seq2seq.chunk(job["text"], self.budget)) for job in batch]
        tally = Tally(progress)
        for job in jobs:
            tally.expect(_passes(len(job.chunks)))
        while pending := [job for job in jobs if job.summary is None]:
            self._round(pending, tally)
        # The sentences too: a pipeline fans out over them (storyboard: one picture each).
        return [{"summary": job.summary, "sentences": sentences(job.summary)} for job in jobs]

    def _round(self, pending: list[_Summary], tally: Tally) -> None:
        """Each pending job's next pass: its chunks summarized (3. encode, 4. generate, 5. decode),
        the jobs with equal token limits in the same `generate()` calls."""
        groups: dict[tuple[int, int], list[_Summary]] = {}
        for job in pending:
            groups.setdefault(job.options(self.budget), []).append(job)
        for (max_new_tokens, min_new_tokens), jobs in groups.items():
            summaries = self.seq2seq.generate([chunk.text for job in jobs for chunk in job.chunks], tally.advance,
                                              max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens)
            for job in jobs:
                own, summaries = summaries[:len(job.chunks)], summaries[len(job.chunks):]
                self._advance(job, [summary.text for summary in own], tally)

    def _advance(self, job: _Summary, summaries: list[str], tally: Tally) -> None:
        if len(job.chunks) == 1:
            if not summaries[0]:
                raise MMQError("summarize: the model produced an empty summary")
            job.summary = summaries[0]
            return
        # 6. combine: the chunk summaries, one per line, are the next round's text.
        combined = "\n".join(summary for summary in summaries if summary)
        if not combined:
            raise MMQError(f"summarize: the model produced an empty summary for each of {len(job.chunks)} chunks")
        logger.info("summarize: %d chunks summarized in %d characters", len(job.chunks), len(combined))
        job.chunks, job.rounds = self.seq2seq.chunk(combined, self.budget), job.rounds + 1
        tally.expect(_passes(len(job.chunks)) - 1)  # the combining pass expected before is among these
        if len(job.chunks) > 1 and job.rounds == MAX_ROUNDS:
            raise MMQError(f"summarize: the summaries were still {len(job.chunks)} chunks after {job.rounds} "
                           "rounds; nothing was truncated")


def _passes(chunks: int) -> int:
    """Generations a round of `chunks` needs: one per chunk, and one to combine them if several."""
    return chunks + 1 if chunks > 1 else chunks
