"""Where a specialisation's weights come from: a hub id, a local folder, or a tiny random model.

"tiny" builds a real architecture at toy size with random weights (for tests and CI, which have
no network and no GPU) and keeps it in the cache folder for every later process.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .devices import compute_dtype

logger = logging.getLogger(__name__)

TINY = "tiny"
# Bump when a tiny builder changes, so old cached folders are not reused.
TINY_VERSION = "v3"


def resolve_model(source: str, *, kind: str, build: Callable[[Path], None], cache_dir: Path) -> str:
    """What to pass to `from_pretrained`: the source itself, or the built tiny model's folder."""
    if source != TINY:
        return source  # from_pretrained takes hub ids and folders alike
    folder = cache_dir / f"tiny-{kind}-{TINY_VERSION}"
    if not folder.is_dir():
        _build_once(folder, build)
    return str(folder)


Model = TypeVar("Model")


def load_pretrained(model_class: type[Model], source: str, device: str) -> Model:
    """`model_class.from_pretrained(source)` in the device's compute dtype (half on a GPU), moved
    onto the device, in inference mode (no dropout)."""
    dtype = compute_dtype(device)
    logger.info("loading %s onto %s as %s", source, device, dtype)
    model: Any = model_class.from_pretrained(source, dtype=dtype)  # type: ignore[attr-defined]
    return model.to(device).eval()


def load_pipeline(pipeline_class: type[Model], source: str, device: str, **options: Any) -> Model:
    """A diffusers `pipeline_class.from_pretrained(source, **options)` in the device's compute dtype,
    moved onto the device, with its progress bar off (workers report progress themselves). Its
    models are in inference mode already: diffusers loads them with `eval()`."""
    dtype = compute_dtype(device)
    logger.info("loading %s onto %s as %s", source, device, dtype)
    pipeline: Any = pipeline_class.from_pretrained(source, dtype=dtype, **options)  # type: ignore[attr-defined]
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _build_once(folder: Path, build: Callable[[Path], None]) -> None:
    # Several worker processes may start at once: each builds into its own temporary sibling
    # and renames it into place, so no process ever loads a half-written folder.
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        logger.info("building %s", folder)
        build(staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other
        _publish(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, folder: Path) -> None:
    try:
        os.rename(staging, folder)
    except OSError:
        if not folder.is_dir():
            raise
        logger.info("another process built %s first; using theirs", folder)
