"""Preparers for tests/test_prepare_processes.py, importable by the prepare processes it starts
(they unpickle these by reference): stand-ins for a specialisation's `prepare`, each doing one
thing that can happen to a real one."""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Mapping
from typing import Any

from mmq.tasks.errors import InvalidInput
from mmq.workers.specialisation_base import Preparer


class Digests(Preparer):
    """Prepares an image input into its digest, and says which process did it. An image whose bytes
    are b"poison" kills the process preparing it (a decoder that crashes); b"" is an invalid input."""

    def __init__(self) -> None:
        self.set_up_in: int | None = None

    def setup(self) -> None:
        self.set_up_in = os.getpid()

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        data = inputs["image"].read()
        if data == b"poison":
            os.kill(os.getpid(), signal.SIGKILL)
        if not data:
            raise InvalidInput("image: empty file", field="image")
        return {"sha256": hashlib.sha256(data).hexdigest(), "pid": os.getpid(), "set_up_in": self.set_up_in}


class Pixels(Preparer):
    """Prepares an image input into pixel values as a caption's are (a float32 tensor of 3 x side x
    side), every value the input's first byte, beside a small numpy array of the same."""

    def __init__(self, side: int = 384) -> None:
        self.side = side

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np
        import torch

        value = inputs["image"].read()[0]
        return {"pixel_values": torch.full((3, self.side, self.side), float(value)),
                "small": np.full(4, value, dtype=np.int64), "pid": os.getpid()}


class CannotSetUp(Preparer):
    """A preparer whose setup fails (its processor's files missing, say)."""

    def setup(self) -> None:
        raise FileNotFoundError("preprocessor_config.json: no such file")

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Any:
        raise AssertionError("never set up, never asked")
