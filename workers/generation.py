"""Progress from inside transformers' `generate()`: one report per generated token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import StoppingCriteria


class TokenProgress(StoppingCriteria):
    """Calls `on_token(n)` after the n-th generated token; never stops generation itself.

    A stopping criterion runs once per generation step, so it is the one hook `generate()` offers
    between tokens. `on_token` raises `StepAborted` when the job was cancelled (through the step's
    progress reporter), which ends `generate()` there rather than at its last token.
    """

    def __init__(self, on_token: Callable[[int], None]) -> None:
        self._on_token = on_token
        self._tokens = 0

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        self._tokens += 1
        self._on_token(self._tokens)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
