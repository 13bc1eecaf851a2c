"""What every `mmq` command shares: its exit codes, and the options that many commands take, as
argparse parent parsers declared once."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from mmq.tasks.errors import InvalidInput
from mmq.tasks.heartbeats import EXIT_LOAD_FAILED
from mmq.tasks.settings import TINY
from mmq.tasks.specialisation_specs import SPECIALISATIONS

EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 1, 2, 3
EXIT_UNAVAILABLE = 5  # Redis, the artifact store or the gateway cannot be reached: worth trying again
EXIT_CODES = f"""exit codes:
  0  done (and a job waited for succeeded)
  {EXIT_FAILED}  failed: a job failed, or mmq refused (the one line on stderr says why)
  {EXIT_USAGE}  usage: an invalid argument or input
  {EXIT_TIMEOUT}  timeout: the job did not end within --timeout
  {EXIT_LOAD_FAILED}  a worker could not load its model (mmq ready)
  {EXIT_UNAVAILABLE}  unavailable: Redis, the artifact store (S3) or the gateway cannot be reached
     (stderr names which, and its address)"""

Commands = argparse._SubParsersAction  # what `add_subparsers` returns; argparse names no public type


@dataclass(frozen=True)
class SharedOptions:
    """Parent parsers (argparse `parents=`) for the options that several commands take."""

    data_dir: argparse.ArgumentParser  # --data-dir: every command
    json: argparse.ArgumentParser  # --json: commands that print a job, a list or a report
    job: argparse.ArgumentParser  # the job id, of the `jobs` commands
    waiting: argparse.ArgumentParser  # --timeout and --quiet, where a command waits for a job
    models: argparse.ArgumentParser  # --models, where the stack's model sources are chosen
    specialisation: argparse.ArgumentParser  # one specialisation, by name


def shared_options() -> SharedOptions:
    data_dir = _parent()
    data_dir.add_argument("--data-dir", help="the local stack's folder: its data and settings (default .mmq)")
    json = _parent()
    json.add_argument("--json", action="store_true", help="print JSON instead of text")
    job = _parent()
    job.add_argument("id", help="the job's id")
    waiting = _parent()
    waiting.add_argument("--timeout", type=float, default=None, help="seconds to wait at most")
    waiting.add_argument("--quiet", action="store_true", help="no progress display while waiting")
    models = _parent()
    models.add_argument("--models", choices=[TINY, "hub"], default=TINY,
                        help="model source of each specialisation whose MMQ_<NAME>_MODEL is unset")
    specialisation = _parent()
    specialisation.add_argument("specialisation", choices=sorted(SPECIALISATIONS))
    return SharedOptions(data_dir=data_dir, json=json, job=job, waiting=waiting, models=models,
                         specialisation=specialisation)


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def only(raw: str) -> list[str]:
    """The specialisations named by `--only a,b`, each checked."""
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in SPECIALISATIONS]
    if unknown:
        raise InvalidInput(f"unknown specialisation {unknown[0]!r}; known: {', '.join(SPECIALISATIONS)}", field="only")
    return names
