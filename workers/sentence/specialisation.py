"""Sentence embeddings with a sentence-transformers model, read without that library.

A sentence-transformers folder is a transformers checkpoint plus a few small files that say how
to turn token vectors into one sentence vector: `modules.json` (the module chain),
`1_Pooling/config.json` (how to pool) and `sentence_bert_config.json` (the sequence limit). This
reads them and does the same with `AutoModel`: pool, then L2-normalise, so a dot product is a
cosine similarity.

Like sentence-transformers, each text is truncated at the model's `max_seq_length` tokens (256
for all-MiniLM-L6-v2): the embedding of a longer text is the embedding of its beginning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import cached_file

from mmq.tasks.errors import ConfigurationError, InvalidInput
from mmq.workers.chunks import chunks, count_chunks
from mmq.workers.embeddings import embedding_output, normalise, ranking
from mmq.workers.models import load_pretrained, model_source
from mmq.workers.specialisation_base import Progress, Specialisation

from .tiny import build_tiny_sentence_model

logger = logging.getLogger(__name__)

_MODULE_TYPES = "sentence_transformers.models."
# The module chain this reads faithfully; any other module (Dense, a second Pooling, ...) would
# change the vectors, so a model that has one is refused rather than embedded differently.
_SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}
_POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


@dataclass(frozen=True)
class SentenceConfig:
    """How sentence-transformers turns this checkpoint's token vectors into sentence vectors."""

    pooling: str  # "mean" (over non-padding tokens) or "cls" (the first token)
    max_seq_length: int  # tokens per text, special tokens included; longer texts are truncated
    do_lower_case: bool  # lower-case texts before tokenising


class SentenceSpecialisation(Specialisation):
    """Embeds texts with a sentence-transformers checkpoint and ranks texts by cosine similarity."""

    max_batch: ClassVar[int] = 64  # texts per forward pass
    # Several jobs' texts share forward passes: the attention mask keeps padding out of every
    # token's attention and out of the mean, so a job's vectors are those it gets alone.
    batchable: ClassVar[frozenset[str]] = frozenset({"embed_text", "rank_text"})

    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    config: SentenceConfig

    def setup(self) -> None:
        source = model_source(self.context, kind="sentence", build=build_tiny_sentence_model)
        # The checkpoint first: for a hub id that is not cached, this fails with transformers'
        # clear message, where the optional files below would merely be missing.
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = load_pretrained(AutoModel, source, self.context.device)
        self.config = read_sentence_config(source, self.model, self.tokenizer)
        logger.info("%s pooling, %d tokens per text at most", self.config.pooling, self.config.max_seq_length)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> list[str]:
        """1. check inputs: the texts to encode (for `rank_text`, the query first); `InvalidInput`
        if there is none to rank."""
        if task == "rank_text":
            # The contract refuses this at submission; keep hand-built messages out too.
            if not inputs["texts"]:
                raise InvalidInput("texts must have at least one item to rank", field="texts")
            return [inputs["query"], *inputs["texts"]]
        return list(inputs["texts"])

    def infer(self, task: str, batch: list[list[str]], progress: Progress) -> list[dict[str, Any]]:
        # 2. encode, one forward pass per chunk of texts across the whole batch of jobs.
        vectors = self._encode([text for texts in batch for text in texts], progress)
        # 3. split the rows back into jobs and shape the outputs.
        outputs, start = [], 0
        for texts in batch:
            rows, start = vectors[start:start + len(texts)], start + len(texts)
            outputs.append(self._output(task, rows))
        return outputs

    def _output(self, task: str, rows: np.ndarray) -> dict[str, Any]:
        if task == "rank_text":
            query, candidates = rows[0], rows[1:]
            return {"ranking": ranking([("text", i, float(s)) for i, s in enumerate(candidates @ query)])}
        return {"embeddings": embedding_output(rows, inline_max=self.context.settings.inline_embedding_max)}

    def _encode(self, texts: list[str], progress: Progress) -> np.ndarray:
        total = count_chunks(len(texts), self.max_batch)
        rows = []
        for done, chunk in enumerate(chunks(texts, self.max_batch), start=1):
            rows.append(self._forward(chunk))
            progress(done, total)  # may raise to abort the step: let it
        if not rows:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        return normalise(np.concatenate(rows))

    @torch.inference_mode()
    def _forward(self, texts: Sequence[str]) -> np.ndarray:
        if self.config.do_lower_case:
            texts = [text.lower() for text in texts]
        tokens = self.tokenizer(list(texts), padding=True, truncation=True,
                                max_length=self.config.max_seq_length, return_tensors="pt")
        tokens = tokens.to(self.model.device)
        hidden = self.model(**tokens).last_hidden_state.float()  # pooled in float32 on a GPU too
        return pool(hidden, tokens["attention_mask"], self.config.pooling).cpu().numpy()


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """One vector per text from its token vectors, as sentence-transformers' Pooling module does."""
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # padding tokens count for nothing
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def read_sentence_config(source: str, model: PreTrainedModel,
                         tokenizer: PreTrainedTokenizerBase) -> SentenceConfig:
    """What the folder's sentence-transformers files say; a plain checkpoint gets mean pooling."""
    modules = _optional_json(source, "modules.json") or []
    _check_modules(source, modules)
    pooling_path = next((m["path"] for m in modules if m["type"].endswith(".Pooling")), "1_Pooling")
    pooling = _pooling_mode(source, _optional_json(source, f"{pooling_path}/config.json"))
    sentence_bert = _optional_json(source, "sentence_bert_config.json") or {}
    # sentence-transformers' own fallback: what both the tokenizer and the position table allow.
    limit = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    max_seq_length = sentence_bert.get("max_seq_length") or limit
    if max_seq_length > limit:
        raise ConfigurationError(
            f"{source}: max_seq_length {max_seq_length} is over the model's limit of {limit}")
    return SentenceConfig(pooling=pooling, max_seq_length=max_seq_length,
                          do_lower_case=bool(sentence_bert.get("do_lower_case", False)))


def _check_modules(source: str, modules: list[dict[str, Any]]) -> None:
    for module in modules:
        kind = module["type"].removeprefix(_MODULE_TYPES)
        if kind not in _SUPPORTED_MODULES:
            raise ConfigurationError(f"{source}: module {module['type']} is not supported "
                                     f"(only {', '.join(sorted(_SUPPORTED_MODULES))})")
        if kind == "Transformer" and module["path"]:
            raise ConfigurationError(f"{source}: the transformer must be at the top of the folder, "
                                     f"not in {module['path']!r}")


def _pooling_mode(source: str, config: dict[str, Any] | None) -> str:
    if config is None:
        return "mean"  # what sentence-transformers uses for a checkpoint without a Pooling module
    chosen = [key for key, value in config.items() if key.startswith("pooling_mode_") and value is True]
    if len(chosen) != 1 or chosen[0] not in _POOLING_MODES:
        raise ConfigurationError(f"{source}: pooling {' + '.join(chosen) or 'none'} is not supported "
                                 f"(only one of {', '.join(_POOLING_MODES)})")
    return _POOLING_MODES[chosen[0]]


def _optional_json(source: str, filename: str) -> Any:
    # A local folder or a (cached) hub id alike; None when the checkpoint has no such file.
    path = cached_file(source, filename, _raise_exceptions_for_missing_entries=False)
    if path is None:
        return None
    with open(path, encoding="utf-8") as file:
        return json.load(file)
