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
from typing import TYPE_CHECKING, Any, TypeVar

from mmq.tasks.settings import TINY

from . import weights
from .devices import compute_dtype

if TYPE_CHECKING:
    from .specialisation_base import ModelContext

logger = logging.getLogger(__name__)

# Bump when a tiny builder changes, so old cached folders are not reused.
TINY_VERSION = "v4"


def resolve_model(source: str, *, kind: str, build: Callable[[Path], None], cache_dir: Path) -> str:
    """What to pass to `from_pretrained`: the source itself, or the built tiny model's folder."""
    if source != TINY:
        return source  # from_pretrained takes hub ids and folders alike
    folder = cache_dir / f"tiny-{kind}-{TINY_VERSION}"
    if not folder.is_dir():
        _build_once(folder, build)
    return str(folder)


def model_source(context: ModelContext, *, kind: str, build: Callable[[Path], None]) -> str:
    """`resolve_model` for a specialisation: its configured model, tiny ones kept in its cache folder."""
    return resolve_model(context.model, kind=kind, build=build, cache_dir=context.cache_dir)


Model = TypeVar("Model")


def load_pretrained(model_class: type[Model], source: str, device: str, *, dtype: Any = None) -> Model:
    """`model_class.from_pretrained(source)` in the device's compute dtype (half on a GPU, unless
    `dtype` says otherwise), loaded straight onto the device (no full copy in host memory first),
    from the float16 variant when that is what is on disk, in inference mode (no dropout)."""
    dtype = dtype or compute_dtype(device)
    logger.info("loading %s onto %s as %s", source, device, dtype)
    model: Any = model_class.from_pretrained(source, dtype=dtype, device_map=device,  # type: ignore[attr-defined]
                                             **_variant(source))
    return model.eval()


def load_pipeline(pipeline_class: type[Model], source: str, device: str, **options: Any) -> Model:
    """A diffusers `pipeline_class.from_pretrained(source, **options)` in the device's compute dtype,
    loaded straight onto the device, from the float16 variant when that is what is on disk, with
    its progress bar off (workers report progress themselves). Its models are in inference mode
    already: diffusers loads them with `eval()`."""
    dtype = compute_dtype(device)
    logger.info("loading %s onto %s as %s", source, device, dtype)
    pipeline: Any = pipeline_class.from_pretrained(source, dtype=dtype, device_map=device,  # type: ignore[attr-defined]
                                                   **_variant(source), **options)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _variant(source: str) -> dict[str, str]:
    """`variant="fp16"` when the weights on disk (a folder, or the hub cache's copy of an id) are
    the float16 variant only, as `mmq models pull` fetches them where one is published."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        folder = _cached_snapshot(source)
    found = weights.variant(folder) if folder is not None else None
    return {"variant": found} if found else {}


def _cached_snapshot(repo: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for marker in ("model_index.json", "config.json"):
        found = try_to_load_from_cache(repo, marker)
        if isinstance(found, str):
            return Path(found).parent
    return None


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
