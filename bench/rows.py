"""A benchmark's result row, and the check that what it measured was real work."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from .harness import real_models


@dataclass
class Row:
    name: str
    what: str
    mmq: str
    baseline: str
    ratio: float
    target: str
    met: bool | None  # None: no target
    notes: list[str] = field(default_factory=list)  # printed under the table: each run's figure, batch sizes

    def markdown(self) -> str:
        verdict = "" if self.met is None else (" ✓" if self.met else " ✗")
        return (f"| {self.name} | {self.what} | {self.mmq} | {self.baseline} | {self.ratio:.2f}× | "
                f"{self.target}{verdict} |")


class NotReal(AssertionError):
    """A benchmark's output is not what a working model gives: it must not be counted."""


def check_output(task: str, record, client) -> None:
    """A job's output is real, not merely present: with real models, a caption that says
    something, an image that is neither one colour nor NaN (which PNG writes as black)."""
    if record.status.value != "succeeded":
        raise NotReal(f"{task} job {record.id} {record.status.value}: {record.error}")
    if not real_models():
        return  # tiny random models: their outputs are noise by design
    if task == "caption" and not record.outputs["text"].strip():
        raise NotReal(f"caption job {record.id} gave an empty caption")
    if task == "text2image":
        import numpy as np
        from PIL import Image

        pixels = np.asarray(Image.open(io.BytesIO(client.job(record.id).outputs["image"].read())), dtype=float)
        if not np.isfinite(pixels).all() or pixels.std() == 0:
            raise NotReal(f"text2image job {record.id} gave a {pixels.shape} image of one colour")

