"""A probe inside a worker process, loaded at interpreter start when this folder is on PYTHONPATH
(tests/test_batching.py starts such workers): it writes down which inputs each run of the model
gets (an inference: `infer()`, after `prepare()` checked each job), and holds each run until the
test opens a gate.

Not a fake: the real specialisation (the tiny BLIP captioner, say) still computes every output. It
is how a test sees, from outside the worker process, how many times the model ran on each input,
and how it makes a cancellation or a lost record land inside a batch's forward pass rather than
before or after it, without depending on timing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

RUNS = os.environ.get("BATCH_PROBE_RUNS")  # one JSON line per model run: its inputs' sha256
GATE = os.environ.get("BATCH_PROBE_GATE")  # runs wait while this file does not exist
GATE_LIMIT_S = 300  # a test that died never opens the gate: then let the run go on anyway


def _identity(inputs: dict) -> str:
    image = inputs.get("image")
    return getattr(image, "sha256", None) or repr(sorted(inputs))


def _wait_for_gate() -> None:
    deadline = time.monotonic() + GATE_LIMIT_S
    while GATE and not Path(GATE).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _probed(specialisation_class):
    def probed_class(name: str):
        real = specialisation_class(name)

        class Probed(real):
            def preparer(self):
                return None  # every prepare in this process, where the probe sees it

            def prepare(self, task, inputs):
                prepared = super().prepare(task, inputs)
                # Which job each prepared value is (by its object: alive until the job ends).
                self.__dict__.setdefault("_probe_identities", {})[id(prepared)] = _identity(inputs)
                return prepared

            def infer(self, task, batch, progress):
                identities = self.__dict__.get("_probe_identities", {})
                with open(RUNS, "a") as runs:
                    runs.write(json.dumps([identities.get(id(prepared), "?") for prepared in batch]) + "\n")
                _wait_for_gate()
                return super().infer(task, batch, progress)

        Probed.__name__ = Probed.__qualname__ = f"Probed{real.__name__}"
        return Probed

    return probed_class


if RUNS:
    from mmq.workers import registry

    registry.specialisation_class = _probed(registry.specialisation_class)
