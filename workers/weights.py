"""Weights on disk before anything starts: which files each specialisation's loader reads, and
fetching, listing and sizing them (`mmq models pull|list`, `mmq plan`).

A checkpoint on the hub holds more than its loader reads: v1-5 has 4 and 7.7 GB single-file
checkpoints at its root beside the diffusers folders, float32 weights beside float16 variants,
ONNX, Flax and TensorFlow copies. Each format's rule keeps the files the loader reads: configs,
tokenizer and processor files, and one set of weights (safetensors before pickled `.bin`; the
float16 variant where one is published, which is what the workers compute in on a GPU).
Everything here runs without torch; huggingface_hub does the fetching (resumable, with progress
bars) into the usual cache (`HF_HOME`), where the loaders find it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mmq.tasks.errors import ConfigurationError, MMQError
from mmq.tasks.settings import TINY, Settings
from mmq.tasks.specialisation_specs import NO_MODEL, SPECIALISATIONS

TRANSFORMERS, DIFFUSERS, CTRANSLATE2, NONE = "transformers", "diffusers", "ctranslate2", "none"
# Files a transformers or diffusers component folder needs beside its weights.
_SUPPORT = ("*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja", "vocab*", "merges*", "spiece*")
_DIFFUSERS_SKIPPED = ("safety_checker", "feature_extractor")  # when the checker is off
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_FLOATS = {"F64", "F32", "F16", "BF16"}
# Specialisations that compute in float32 on a GPU too (VITS: see workers/speak).
FULL_PRECISION = frozenset({"speak"})


class WeightsError(MMQError):
    """A checkpoint's files could not be listed, fetched or read."""


@dataclass(frozen=True)
class Checkpoint:
    """The checkpoint a specialisation is configured with, and how its loader reads it."""

    specialisation: str
    source: str  # a hub id, a local folder, "tiny", or "pyav" (no model)
    format: str  # TRANSFORMERS, DIFFUSERS, CTRANSLATE2 or NONE
    skip: tuple[str, ...] = ()  # component folders the worker will not load

    @property
    def on_hub(self) -> bool:
        return self.format != NONE and self.source != TINY and not _is_folder(self.source)


def checkpoints(settings: Settings, names: Iterable[str] | None = None) -> list[Checkpoint]:
    """The configured checkpoints of each named specialisation (all of them by default), in order:
    clip has two (CLIP, then CLAP for sounds, unless MMQ_CLIP_SOUND_MODEL=none)."""
    chosen = list(names) if names else list(SPECIALISATIONS)
    unknown = [n for n in chosen if n not in SPECIALISATIONS]
    if unknown:
        raise ConfigurationError(f"unknown specialisation {unknown[0]!r}; known: {', '.join(SPECIALISATIONS)}")
    return [checkpoint for name in chosen for checkpoint in _checkpoints(settings, name)]


def _checkpoints(settings: Settings, name: str) -> list[Checkpoint]:
    """A specialisation's checkpoints: one, or two for clip, which keeps CLAP (sounds) beside CLIP."""
    found = [_checkpoint(settings, name)]
    if name == "clip" and settings.clip_sound_model != NO_MODEL:
        found.append(Checkpoint(name, settings.clip_sound_model, TRANSFORMERS))
    return found


def _checkpoint(settings: Settings, name: str) -> Checkpoint:
    fmt = SPECIALISATIONS[name].weights
    if name == "speech" and settings.speech_backend == "faster-whisper":
        fmt = CTRANSLATE2
    skip = _DIFFUSERS_SKIPPED if name == "diffusion" and not settings.diffusion_safety_checker else ()
    return Checkpoint(name, settings.model_for(name), fmt, skip)


def select_files(files: Mapping[str, int], fmt: str, *, skip: Iterable[str] = ()) -> list[str]:
    """The files of a repository listing (path -> size) that `fmt`'s loader reads."""
    if fmt == DIFFUSERS:
        return _diffusers_files(files, tuple(skip))
    if fmt == CTRANSLATE2:
        return sorted(p for p in files if "/" not in p and (p == "model.bin" or p.endswith(".json")
                                                            or p.startswith("vocabulary")))
    if fmt == TRANSFORMERS:
        return _folder_files(files, "")
    return []


def _folder_files(files: Mapping[str, int], folder: str) -> list[str]:
    """Support files and one set of weights of one folder (not its subfolders)."""
    here = {p: s for p, s in files.items() if str(PurePosixPath(p).parent) == (folder or ".")}
    names = {PurePosixPath(p).name: p for p in here}
    support = [p for n, p in names.items() if any(fnmatch.fnmatch(n, g) for g in _SUPPORT)
               and not _is_weight_index(n)]
    return sorted(support + _weights(names))


def _weights(names: Mapping[str, str]) -> list[str]:
    """One set of weights: safetensors before pickled `.bin`, the float16 variant when published."""
    for suffix in (".safetensors", ".bin"):
        candidates = {n: p for n, p in names.items() if _is_weights(n, suffix)}
        if not any(not _is_weight_index(n) for n in candidates):
            continue
        half = {n: p for n, p in candidates.items() if _variant(n) == "fp16"}
        if any(not _is_weight_index(n) for n in half):
            return sorted(half.values())
        return sorted(p for n, p in candidates.items() if _variant(n) is None)  # not non_ema, not fp32…
    return []


def _is_weights(name: str, suffix: str) -> bool:
    """A weights file (or its shard index) of this kind; for `.bin`, PyTorch's own names only
    (not `training_args.bin`, `optimizer.bin`)."""
    if _is_weight_index(name):
        return suffix in name
    return name.endswith(suffix) and (suffix != ".bin" or name.startswith(("pytorch_model", "diffusion_pytorch_model")))


def _variant(name: str) -> str | None:
    """The variant a weights file (or shard index) belongs to: `unet/x.fp16.safetensors`,
    `x.fp16-00001-of-00002.safetensors`, `x.safetensors.index.fp16.json` are "fp16";
    `x.safetensors`, `model-00001-of-00002.safetensors` none."""
    if _is_weight_index(name):
        parts = name.split(".")  # stem, safetensors|bin, index, [variant], json
        return parts[3] if len(parts) == 5 else None
    stem = name.rsplit(".", 1)[0]
    return stem.split(".", 1)[1].split("-")[0] if "." in stem else None


def _is_weight_index(name: str) -> bool:
    return ".index." in name and name.endswith(".json")


def _diffusers_files(files: Mapping[str, int], skip: tuple[str, ...]) -> list[str]:
    """model_index.json, and each component folder it names (not the root's single-file copies)."""
    selected = ["model_index.json"] if "model_index.json" in files else []
    folders = sorted({str(PurePosixPath(p).parent) for p in files if "/" in p})
    for folder in folders:
        if folder.split("/")[0] in skip or "/" in folder:
            continue
        selected += _folder_files(files, folder)
    return selected


def variant(folder: Path) -> str | None:
    """"fp16" when the weights on disk under `folder` are the float16 variant (the loaders must
    then be told, or they look for the full-precision files), else None."""
    weights = [p.name for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin")]
    return "fp16" if weights and all(_variant(name) == "fp16" for name in weights) else None


# -- the hub ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Listing:
    """What the loader reads of a checkpoint, and which of those files are on disk already."""

    checkpoint: Checkpoint
    files: dict[str, int]  # path -> size, the loader's files only
    missing: tuple[str, ...]
    snapshot: Path | None  # the cache folder they are (or will be) in

    @property
    def size(self) -> int:
        return sum(self.files.values())

    @property
    def missing_size(self) -> int:
        return sum(self.files[p] for p in self.missing)


def remote_listing(checkpoint: Checkpoint) -> Listing:
    """Ask the hub what the checkpoint holds; what the loader reads of it; what is missing here."""
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(checkpoint.source, files_metadata=True)
    except Exception as exc:  # huggingface_hub raises its own and httpx's
        raise WeightsError(f"{checkpoint.specialisation}: cannot list {checkpoint.source} on the hub: "
                           f"{_first_line(exc)}") from None
    files = {s.rfilename: s.size or 0 for s in info.siblings or []}
    return _listing(checkpoint, files, revision=info.sha)


def local_listing(checkpoint: Checkpoint) -> Listing | None:
    """The same from the cache alone (no network): None when the checkpoint was never fetched."""
    from huggingface_hub import get_cached_repo_tree

    try:
        tree = get_cached_repo_tree(checkpoint.source)
    except Exception:  # not in the cache, or no listing kept for it
        return None
    files = {f.path: f.size for f in tree}
    return _listing(checkpoint, files, revision=None)


def _listing(checkpoint: Checkpoint, files: Mapping[str, int], revision: str | None) -> Listing:
    from huggingface_hub import try_to_load_from_cache

    chosen = {p: files[p] for p in select_files(files, checkpoint.format, skip=checkpoint.skip)}
    if not chosen:
        raise WeightsError(f"{checkpoint.specialisation}: {checkpoint.source} has no {checkpoint.format} weights "
                           f"(its files: {', '.join(sorted(files)[:8])}…)")
    found = {p: try_to_load_from_cache(checkpoint.source, p, revision=revision) for p in chosen}
    present = {p: Path(f) for p, f in found.items() if isinstance(f, str)}
    missing = tuple(p for p in chosen if p not in present)
    snapshot = _snapshot_of(next(iter(present.items()))) if present else None
    return Listing(checkpoint, chosen, missing, snapshot)


def _snapshot_of(item: tuple[str, Path]) -> Path:
    relative, path = item
    return Path(str(path)[: -len(relative)].rstrip("/"))


def pull(listing: Listing) -> Path:
    """Fetch the loader's files that are missing (resumable; huggingface_hub's progress bars)."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(listing.checkpoint.source, allow_patterns=sorted(listing.files))
    except Exception as exc:
        raise WeightsError(f"{listing.checkpoint.specialisation}: fetching {listing.checkpoint.source} failed: "
                           f"{_first_line(exc)}") from None
    return Path(folder)


# -- what a checkpoint needs in memory --------------------------------------------------------

def weight_bytes(folder: Path, files: Iterable[str], *, half: bool) -> int:
    """Bytes the weights take once loaded: from the safetensors headers (each tensor's shape and
    dtype), floats counted at 2 bytes when the worker computes in half precision. Pickled `.bin`
    weights are counted by their file size (their header cannot be read without unpickling)."""
    total = 0
    for name in files:
        path = folder / name
        if name.endswith(".safetensors"):
            total += _safetensors_bytes(path, half=half)
        elif name.endswith(".bin") and path.is_file():
            total += path.stat().st_size // (2 if half else 1)
    return total


def _safetensors_bytes(path: Path, *, half: bool) -> int:
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(min(length, 100 * 2**20)))
    except (OSError, ValueError, struct.error):  # unreadable: sized by the file; the worker's load says why
        return path.stat().st_size if path.is_file() else 0
    total = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in tensor["shape"]:
            count *= dim
        dtype = tensor["dtype"]
        total += count * (2 if half and dtype in _FLOATS else _DTYPE_BYTES.get(dtype, 4))
    return total


def local_folder_files(folder: Path, fmt: str, skip: Iterable[str] = ()) -> list[str]:
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    return select_files(files, fmt, skip=skip)


def _is_folder(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().is_dir()


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def hub_is_off() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def describe_size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
