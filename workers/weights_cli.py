"""`python -m mmq.workers.weights_cli pull|list|needs`: what `mmq models` and `mmq plan` run.

A process of its own, started by the `mmq` command line (which never imports the workers):
it needs huggingface_hub, which comes with `mmq[workers]`, and never imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmq.tasks.errors import MMQError
from mmq.tasks.settings import TINY, Settings

from . import weights
from .weights import NONE, Checkpoint, describe_size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmq models")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("pull", "fetch each configured checkpoint's files (only those its loader reads)"),
                       ("list", "what is on disk, its size, and what is missing (no network)"),
                       ("needs", "bytes of weights each worker loads, as JSON (for mmq plan)")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("specialisations", nargs="*", help="default: every specialisation")
        if name == "needs":
            sub.add_argument("--on-gpu", action="store_true", help="count floats at 2 bytes (float16)")
    args = parser.parse_args(argv)
    try:
        chosen = weights.checkpoints(Settings.from_env(), args.specialisations)
        return {"pull": _pull, "list": _list, "needs": _needs}[args.command](chosen, args)
    except MMQError as exc:
        print(f"mmq models: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # a client-only install
        print(f"mmq models: {exc}: this needs the workers' packages (pip install 'mmq[workers]')", file=sys.stderr)
        return 2


def _pull(chosen: list[Checkpoint], _args: argparse.Namespace) -> int:
    if any(c.on_hub for c in chosen) and weights.hub_is_off():
        raise MMQError("the hub is off (HF_HUB_OFFLINE=1): unset it to pull")
    failed = []
    for checkpoint in chosen:
        if not checkpoint.on_hub:
            print(f"{checkpoint.specialisation}: {_not_on_hub(checkpoint)}")
            continue
        try:
            listing = weights.remote_listing(checkpoint)
            print(f"{checkpoint.specialisation}: {checkpoint.source}: {len(listing.files)} files, "
                  f"{describe_size(listing.size)}; to fetch: {len(listing.missing)} "
                  f"({describe_size(listing.missing_size)})", flush=True)
            if listing.missing:
                started = time.monotonic()
                weights.pull(listing)
                print(f"{checkpoint.specialisation}: fetched in {time.monotonic() - started:.1f} s", flush=True)
        except weights.WeightsError as exc:
            print(f"mmq models: {exc}", file=sys.stderr)
            failed.append(checkpoint.specialisation)
    if failed:
        print(f"mmq models: not pulled: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _list(chosen: list[Checkpoint], _args: argparse.Namespace) -> int:
    print(f"{'SPECIALISATION':<14} {'STATE':<10} {'SIZE':>9}  MODEL")
    for checkpoint in chosen:
        state, size, note = _state(checkpoint)
        print(f"{checkpoint.specialisation:<14} {state:<10} {size:>9}  {checkpoint.source}{note}")
    return 0


def _state(checkpoint: Checkpoint) -> tuple[str, str, str]:
    if checkpoint.format == NONE:
        return "no model", "-", ""
    if checkpoint.source == TINY:
        return "tiny", "-", " (built locally at start)"
    if not checkpoint.on_hub:
        folder = Path(checkpoint.source).expanduser()
        if not folder.is_dir():
            return "missing", "-", " (no such folder)"
        files = weights.local_folder_files(folder, checkpoint.format, checkpoint.skip)
        return "on disk", describe_size(sum((folder / f).stat().st_size for f in files)), " (local folder)"
    listing = weights.local_listing(checkpoint)
    if listing is None:
        return "missing", "-", f" (mmq models pull {checkpoint.specialisation})"
    if listing.missing:
        return "partial", describe_size(listing.size - listing.missing_size), \
            f" ({len(listing.missing)} of {len(listing.files)} files missing, {describe_size(listing.missing_size)})"
    return "on disk", describe_size(listing.size), ""


def _needs(chosen: list[Checkpoint], args: argparse.Namespace) -> int:
    # One entry per worker: a worker that loads two checkpoints (clip: CLIP and CLAP) needs both.
    entries: dict[str, dict[str, Any]] = {}
    for checkpoint in chosen:
        entry = _need(checkpoint, half=args.on_gpu)
        earlier = entries.get(checkpoint.specialisation)
        entries[checkpoint.specialisation] = _together(earlier, entry) if earlier else entry
    print(json.dumps(list(entries.values())))
    return 0


def _together(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    sizes = (first["weights_bytes"], second["weights_bytes"])
    return {**first, "model": f"{first['model']} + {second['model']}",
            "weights_bytes": None if None in sizes else sum(sizes),
            "on_disk": first["on_disk"] and second["on_disk"], "missing": first["missing"] + second["missing"]}


def _need(checkpoint: Checkpoint, *, half: bool) -> dict[str, Any]:
    """Bytes of weights at the compute dtype (None: needs no GPU), and whether it is on disk."""
    entry: dict[str, Any] = {"specialisation": checkpoint.specialisation, "model": checkpoint.source,
                             "weights_bytes": None, "on_disk": True, "missing": []}
    if checkpoint.format == NONE:
        return entry
    half = half and checkpoint.specialisation not in weights.FULL_PRECISION
    if checkpoint.source == TINY:
        entry["weights_bytes"] = 0  # a few MB at most, built at start
        return entry
    if not checkpoint.on_hub:
        folder = Path(checkpoint.source).expanduser()
        if not folder.is_dir():
            return {**entry, "on_disk": False, "missing": [str(folder)]}
        files = weights.local_folder_files(folder, checkpoint.format, checkpoint.skip)
        return {**entry, "weights_bytes": weights.weight_bytes(folder, files, half=half)}
    listing = weights.local_listing(checkpoint)
    if listing is None or listing.missing or listing.snapshot is None:
        missing = list(listing.missing) if listing else ["(never fetched)"]
        return {**entry, "on_disk": False, "missing": missing}
    return {**entry, "weights_bytes": weights.weight_bytes(listing.snapshot, listing.files, half=half)}


def _not_on_hub(checkpoint: Checkpoint) -> str:
    if checkpoint.format == NONE:
        return "no model to fetch"
    if checkpoint.source == TINY:
        return "tiny (built locally when the worker starts; nothing to fetch)"
    return f"a local folder ({checkpoint.source}); nothing to fetch"


if __name__ == "__main__":
    raise SystemExit(main())
