"""The `plan` task: a request in words and the kinds of its files become a pipeline spec.

An instruction-tuned causal LM (SmolLM2-360M-Instruct by default) is prompted with the catalogue and
decodes greedily under the plan grammar, so whatever its weights, what comes out is a pipeline that
validates and takes the files (docs/planning.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from transformers import AutoModelForCausalLM, AutoTokenizer

from mmq.tasks.catalogue import PIPELINES, TASKS
from mmq.tasks.fields import Kind
from mmq.tasks.planning import check_files_usable, parse_files
from mmq.tasks.specfiles import pipeline_to_dict
from mmq.workers.models import load_pretrained, model_source
from mmq.workers.specialisation_base import Progress, Specialisation

from .decode import Planner
from .tiny import build_tiny_planner


@dataclass(frozen=True)
class Request:
    """One job, checked: the request and the files it may use."""

    request: str
    files: Mapping[str, Kind]


class PlanSpecialisation(Specialisation):
    """Plans pipelines with a causal LM under the plan grammar."""

    # One plan per generate call: each has its own grammar (its files) and its own prompt length.
    batchable: ClassVar[frozenset[str]] = frozenset()

    planner: Planner

    def setup(self) -> None:
        source = model_source(self.context, kind="planner", build=build_tiny_planner)
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = load_pretrained(AutoModelForCausalLM, source, self.context.device)
        self.planner = Planner(model, tokenizer, TASKS, PIPELINES)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Request:
        """1. check inputs: files named and of known kinds, and each taken by some task, before any
        model runs."""
        files = parse_files(inputs["files"])
        check_files_usable(TASKS, files)
        return Request(inputs["request"], files)

    def infer(self, task: str, batch: list[Request], progress: Progress) -> list[dict[str, Any]]:
        # 2. decode under the grammar, 3. read the plan back; progress counts tokens against the limit.
        results = []
        for job in batch:
            limit = self.planner.max_new_tokens(job.files)
            pipeline = self.planner.plan(job.request, job.files, lambda n, limit=limit: progress(n, limit))
            progress(limit, limit)  # a plan that ended before the limit has done its work
            results.append({"pipeline": pipeline_to_dict(replace(pipeline, description=job.request))})
        return results
