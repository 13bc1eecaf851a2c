"""Greedy decoding of a plan under the plan grammar (llguidance), and reading it back as a pipeline.

The grammar (`mmq.tasks.planning`) makes every finished sentence a valid pipeline for the files. Its
language is finite, and `max_chars` bounds its longest sentence: with at least that many new tokens
(a byte-level token is at least one character) a generation always ends with the end-of-turn token
the grammar allows only after a whole plan. A generation that stops before it (a stopping criterion,
a bug) is refused as unfinished, never parsed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import torch
from transformers import LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteriaList

from mmq.tasks.errors import MMQError
from mmq.tasks.fields import Kind
from mmq.tasks.pipelines import Pipeline
from mmq.tasks.planning import max_chars, plan_rules, plan_to_pipeline
from mmq.tasks.planning.grammar import render
from mmq.tasks.taskspec import TaskSpec
from mmq.workers.generation import TokenProgress

from .constrain import Grammars
from .prompt import messages

Files = tuple[tuple[str, Kind], ...]


class Planner:
    """A causal LM and its tokenizer, turning (request, files) into a validated pipeline."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tasks: Mapping[str, TaskSpec],
                 pipelines: Mapping[str, Pipeline]) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.tasks = tasks
        self.pipelines = pipelines
        # The model's output layer may be wider than the tokenizer (padded): the mask must cover it.
        vocab_size = model.get_output_embeddings().weight.shape[0]
        self._grammars = Grammars(tokenizer, vocab_size=vocab_size, stop_ids=self._stop_ids())
        self._compiled = lru_cache(maxsize=64)(self._compile)
        self._prefix_cache: tuple[torch.Tensor, Any] | None = None

    def max_new_tokens(self, files: Mapping[str, Kind]) -> int:
        """Enough tokens for the longest plan, and one for the end of the turn."""
        return max_chars(plan_rules(self.tasks, files)) + 1

    def text(self, request: str, files: Mapping[str, Kind], on_token: Callable[[int], None]) -> str:
        """The plan's text: greedy, constrained, finished (or `MMQError`)."""
        compiled, limit = self._compiled(tuple(files.items()))
        prompt = self.tokenizer.apply_chat_template(messages(self.tasks, request, files), add_generation_prompt=True,
                                                    return_tensors="pt", return_dict=True).to(self.model.device)
        processor = self._grammars.processor(compiled)
        with torch.inference_mode():
            tokens = self.model.generate(**prompt, **self._prefix(prompt["input_ids"]), max_new_tokens=limit,
                                         do_sample=False,
                                         logits_processor=LogitsProcessorList([processor]),
                                         stopping_criteria=StoppingCriteriaList([TokenProgress(on_token)]))
        new = tokens[0, prompt["input_ids"].shape[1]:].tolist()
        if not new or new[-1] not in self._stop_ids():
            raise MMQError(f"plan: the model did not finish a plan within {len(new)} tokens")
        return self.tokenizer.decode(new[:-1], skip_special_tokens=False)

    def plan(self, request: str, files: Mapping[str, Kind], on_token: Callable[[int], None]) -> Pipeline:
        text = self.text(request, files, on_token)
        return plan_to_pipeline(text, self.tasks, self.pipelines, files)

    def _prefix(self, input_ids: torch.Tensor) -> dict[str, Any]:
        """The cached keys and values of the prompt's shared beginning (the system message and the
        examples, ~1,000 tokens), computed once: each plan then reads only its own request."""
        if self._prefix_cache is None:
            turns = messages(self.tasks, "", {})[:-1]
            ids = self.tokenizer.apply_chat_template(turns, return_tensors="pt", return_dict=True)["input_ids"]
            with torch.inference_mode():
                cache = self.model(input_ids=ids.to(self.model.device), use_cache=True).past_key_values
            self._prefix_cache = (ids.to(input_ids.device), cache)
        ids, cache = self._prefix_cache
        shared = ids.shape[1]
        if input_ids.shape[1] > shared and torch.equal(input_ids[:, :shared], ids):
            return {"past_key_values": copy.deepcopy(cache)}  # generate() extends the copy it is given
        return {}

    def _compile(self, files: Files) -> tuple[str, int]:
        rules = plan_rules(self.tasks, dict(files))
        return self._grammars.compile(render(rules)), max_chars(rules) + 1

    def _stop_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        return list(eos) if isinstance(eos, (list, tuple)) else [eos]
