"""Model multiplexing: a worker serves several model ids of its family, a few loaded at a time.

A job may name a model id from the worker's allow-list (its default, plus MMQ_<NAME>_MODELS); at
most `max_loaded` are kept loaded, and loading one more first unloads the least recently used.
What is loaded (and what is loading) can be read at any time without waiting for a load: the
heartbeat reads it every few seconds, and a load may take minutes.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from mmq.tasks.errors import InvalidInput

from .specialisation_base import Specialisation

log = logging.getLogger(__name__)


class ModelPool:
    def __init__(self, build: Callable[[str], Specialisation], *, default: str, device: str,
                 allowed: tuple[str, ...] = (), max_loaded: int = 1) -> None:
        self._build = build  # model id -> a specialisation, not yet set up
        self.default = default
        self.device = device
        self.allowed = (default, *(m for m in allowed if m != default))
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, Specialisation] = OrderedDict()
        self._lock = threading.Lock()
        self.load_seconds: dict[str, float] = {}
        # Replaced whole under the lock, read without it (an attribute read is atomic).
        self._loaded_ids: tuple[str, ...] = ()
        self.loading: tuple[str, float] | None = None  # (model id, time.time() it started) while loading

    def get(self, model: str | None = None) -> Specialisation:
        """The loaded specialisation of `model` (the default when empty), loading it if needed."""
        model = model or self.default
        if model not in self.allowed:
            raise InvalidInput(f"model {model!r} is not served by this worker; it serves "
                               f"{', '.join(repr(m) for m in self.allowed)}", field="model")
        with self._lock:  # one load at a time, and never while evicting
            if model in self._loaded:
                self._loaded.move_to_end(model)
                self._loaded_ids = tuple(self._loaded)
                return self._loaded[model]
            while len(self._loaded) >= self.max_loaded:
                self._unload(*self._loaded.popitem(last=False))
                self._loaded_ids = tuple(self._loaded)
            return self._load(model)

    def peek(self, model: str) -> Specialisation | None:
        """The specialisation of `model` if it is loaded now; never loads, waits or reorders."""
        return self._loaded.get(model) if model in self._loaded_ids else None

    def _load(self, model: str) -> Specialisation:
        started = time.monotonic()
        self.loading = (model, time.time())
        try:
            specialisation = self._build(model)
            specialisation.setup()
        finally:
            self.loading = None
        self.load_seconds[model] = time.monotonic() - started
        log.info("loaded model %s in %.1f s", model, self.load_seconds[model])
        self._loaded[model] = specialisation
        self._loaded_ids = tuple(self._loaded)
        return specialisation

    def loaded(self) -> list[str]:
        """Model ids loaded now, least recently used first; never waits for a load in progress."""
        return list(self._loaded_ids)

    def _unload(self, model: str, specialisation: Specialisation) -> None:
        log.info("unloading model %s (least recently used; %d may stay loaded)", model, self.max_loaded)
        device = specialisation.context.device
        del specialisation
        gc.collect()  # the weights go with the last reference; then hand the GPU memory back
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
