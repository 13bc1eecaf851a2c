"""Translation with an NLLB-family model (nllb-200): text in one language code, out in another.

NLLB names languages by codes such as eng_Latn (ISO 639-3 language, ISO 15924 script): the encoder
reads "<source code> text </s>", and the decoder's first token, forced, is the target code. Long
text is cut into chunks at sentence ends, translated in batches and joined in order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from transformers import PreTrainedTokenizerBase

from mmq.tasks import languages
from mmq.tasks.errors import ConfigurationError, InvalidInput, MMQError
from mmq.workers.models import model_source
from mmq.workers.specialisation_base import Progress, Specialisation

from .chunking import Chunk, join
from .model import Generated, Seq2Seq, Tally
from .tiny import build_tiny_nllb

logger = logging.getLogger(__name__)

LANGUAGE_CODE = re.compile(r"[a-z]{3}_[A-Z][a-z]{3}")
# NLLB was trained on sentences (its card: inputs over 512 tokens translate worse); a few
# sentences per chunk keep quality and keep each output well within the decoder's reach.
MAX_CHUNK_TOKENS = 256
# A translation can take more tokens than its source (other scripts, longer words): room for
# twice as many, and no more, so that a degenerate repetition stops early.
OUTPUT_RATIO = 2
OUTPUT_SLACK = 16


class TranslateSpecialisation(Specialisation):
    """Translates text with `AutoModelForSeq2SeqLM.generate()`, its chunks in batches."""

    # Several jobs' chunks share `generate()` calls, those of one language pair together.
    batchable: ClassVar[frozenset[str]] = frozenset({"translate"})

    seq2seq: Seq2Seq
    languages: frozenset[str]  # the language codes the tokenizer knows
    budget: int  # text tokens per chunk

    def setup(self) -> None:
        source = model_source(self.context, kind="nllb", build=build_tiny_nllb)
        self.seq2seq = Seq2Seq.load(source, self.context.device)
        self.languages = language_codes(self.seq2seq.tokenizer)
        if not self.languages:
            raise ConfigurationError(
                f"translate: the tokenizer of {self.context.model!r} knows no language codes such as "
                "eng_Latn; translate needs an NLLB-style model"
            )
        self.budget = self.seq2seq.chunk_budget(cap=MAX_CHUNK_TOKENS)
        logger.info("translate: %d language codes; chunks of up to %d tokens",
                    len(self.languages), self.budget)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        """1. check inputs: `InvalidInput` naming the first bad value (an empty text, a language the
        model does not know)."""
        if not inputs["text"].strip():
            raise InvalidInput("text must not be empty", field="text")
        for field in ("source_language", "target_language"):
            self._model_code(inputs, field)
        return inputs

    def infer(self, task: str, batch: list[Mapping[str, Any]], progress: Progress) -> list[dict[str, Any]]:
        # 2. chunk: every job now, so that progress knows the total. Each line is translated apart:
        # NLLB's tokenizer reads line breaks as spaces, and the text's layout should survive.
        chunked = [self.seq2seq.chunk(job["text"], self.budget, break_lines=True) for job in batch]
        tally = Tally(progress)
        tally.expect(sum(len(chunks) for chunks in chunked))
        translations: dict[int, str] = {}
        # The jobs of one language pair share `generate()` calls: the source code is the
        # tokenizer's, the target code the call's.
        for (source, target), indices in self._by_languages(batch).items():
            outputs = self._generate([chunk.text for i in indices for chunk in chunked[i]], source, target, tally)
            for i in indices:
                translations[i] = _joined(chunked[i], outputs[:len(chunked[i])])
                outputs = outputs[len(chunked[i]):]
        return [{"translation": translations[i]} for i in range(len(batch))]

    def _model_code(self, job: Mapping[str, Any], field: str) -> str:
        """The model's own code (fra_Latn) for the language as the user named it (fr, fr-FR, fra…)."""
        return languages.for_nllb(job[field], self.languages, field=field)

    def _by_languages(self, batch: list[Mapping[str, Any]]) -> dict[tuple[str, str], list[int]]:
        groups: dict[tuple[str, str], list[int]] = {}
        for i, job in enumerate(batch):
            pair = self._model_code(job, "source_language"), self._model_code(job, "target_language")
            groups.setdefault(pair, []).append(i)
        return groups

    def _generate(self, texts: list[str], source: str, target: str, tally: Tally) -> list[Generated]:
        tokenizer = self.seq2seq.tokenizer
        # 3. encode: the tokenizer puts the source code before each chunk.
        tokenizer.src_lang = source
        # 4. generate, 5. decode: the target code is the decoder's first token.
        return self.seq2seq.generate(texts, tally.advance, max_new_tokens=self._max_new_tokens,
                                     forced_bos_token_id=tokenizer.convert_tokens_to_ids(target))

    def _max_new_tokens(self, input_tokens: int) -> int:
        # Of the chunk's own length: a chunk gets the same limit whatever is generated beside it.
        return min(self.seq2seq.max_new_tokens, OUTPUT_RATIO * input_tokens + OUTPUT_SLACK)


def _joined(chunks: list[Chunk], outputs: list[Generated]) -> str:
    """One job's translation from its chunks' outputs; a chunk cut at its token limit is logged."""
    for number, output in enumerate(outputs, start=1):
        if not output.finished:  # said, not hidden: the translation may lack its end
            logger.warning("translate: chunk %d of %d reached the token limit before its end",
                           number, len(chunks))
    # 6. combine: in order, separated as the chunks were in the text.
    translation = join(chunks, [output.text for output in outputs])
    if not translation:
        raise MMQError("translate: the model produced an empty translation")
    return translation


def language_codes(tokenizer: PreTrainedTokenizerBase) -> frozenset[str]:
    """The NLLB language codes among the tokenizer's added and special tokens."""
    # transformers 5 keeps them as extra special tokens; older checkpoints list them as
    # additional_special_tokens. Both end up added tokens: look there, not at an attribute.
    candidates = {*tokenizer.get_added_vocab(), *tokenizer.all_special_tokens}
    return frozenset(token for token in candidates if LANGUAGE_CODE.fullmatch(token))


