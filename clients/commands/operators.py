"""What operators read and manage, always directly against Redis: `mmq status`, `ready` (a probe)
and `keys` (the gateway's API keys)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from mmq.tasks.heartbeats import EXIT_LOAD_FAILED

from .common import EXIT_FAILED, Commands, SharedOptions

if TYPE_CHECKING:
    from ..keys import KeyStore


def add_keys(commands: Commands, shared: SharedOptions) -> None:
    keys = commands.add_parser("keys", help="API keys of the gateway, per tenant")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="a new key (printed once) for a tenant",
                                      parents=[shared.json, shared.data_dir])
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="", help="what the key is for")
    create.set_defaults(handler=_keys_create)
    key_list = keys_commands.add_parser("list", help="keys (never their secrets)", parents=[shared.json, shared.data_dir])
    key_list.add_argument("--tenant")
    key_list.set_defaults(handler=_keys_list)
    revoke = keys_commands.add_parser("revoke", help="revoke a key by its id", parents=[shared.data_dir])
    revoke.add_argument("id")
    revoke.set_defaults(handler=_keys_revoke)


def add_status(commands: Commands, shared: SharedOptions) -> None:
    status = commands.add_parser("status", help="queues, workers and recent failures",
                                 parents=[shared.json, shared.data_dir])
    status.set_defaults(handler=_status)


def add_ready(commands: Commands, shared: SharedOptions) -> None:
    ready = commands.add_parser("ready", help="exit 0 when a worker of SPECIALISATION on this host is ready "
                                "(1: loading or none; 4: its model failed to load; 5: Redis unreachable)",
                                parents=[shared.specialisation, shared.data_dir])
    ready.add_argument("--live", action="store_true",
                       help="exit 0 while the worker loads its model too (a liveness probe: a load may take minutes)")
    ready.set_defaults(handler=_ready)


def _key_store() -> KeyStore:
    from mmq.tasks.settings import Settings

    from ..keys import KeyStore

    return KeyStore.from_settings(Settings.from_env())


def _keys_create(args: argparse.Namespace) -> int:
    store = _key_store()
    key, plaintext = store.create(args.tenant, args.name)
    secret = store.webhook_secret(args.tenant)
    if args.json:
        print(json.dumps({**key.to_dict(), "key": plaintext, "webhook_secret": secret}, indent=2))
        return 0
    print(f"key {key.id} for tenant {key.tenant} (shown once; keep it secret):")
    print(plaintext)
    print(f"webhook signing secret of tenant {key.tenant}: {secret}")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    keys = _key_store().list(args.tenant)
    if args.json:
        print(json.dumps([k.to_dict() for k in keys], indent=2))
        return 0
    for key in keys:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(key.created_at))
        print(f"{key.id}  {key.tenant:<20} {'active' if key.active else 'revoked':<8} {created}  {key.name}")
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    key = _key_store().revoke(args.id)
    print(f"key {key.id} of tenant {key.tenant} is revoked")
    return 0


def _status(args: argparse.Namespace) -> int:
    from mmq.tasks.records import JobStore
    from mmq.tasks.settings import Settings

    from ..operations import status

    settings = Settings.from_env()
    report = status(JobStore.from_settings(settings), settings.redis.sync_client())
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    _print_queues(report["queues"])
    _print_workers(report["workers"])
    _print_jobs(report["jobs"], report["recent_failures"])
    return 0


def _print_queues(queues: list[dict[str, Any]]) -> None:
    print("QUEUE          DEPTH  READY")
    for queue in queues:
        print(f"{queue['queue']:<14} {queue['depth']:>5}  {queue['workers']:>5}")
        if queue.get("last_load_error") and not queue["workers"]:
            print(f"    last load failed: {queue['last_load_error']['error']}")


def _print_workers(workers: list[dict[str, Any]]) -> None:
    from mmq.tasks import heartbeats

    print(f"\n{'WORKER':<40} {'STATE':<22} DEVICE  GPU  LOAD    MODEL")
    for worker in workers:
        state = heartbeats.describe(worker)
        load = f"{worker['load_s']:>5.1f}s" if "load_s" in worker else "     -"
        print(f"{worker['hostname']:<40} {state.split(':')[0]:<22} {worker.get('device') or '-':<7} "
              f"{worker.get('gpu') or '-':<4} {load}  {worker['model']}")
        if worker.get("error"):
            print(f"    {worker['error']}")
        if worker.get("gpu_name"):
            memory = worker.get("gpu_memory") or {}
            print(f"    {worker['gpu_name']}: {memory.get('reserved', 0) / 2**30:.1f} of "
                  f"{worker.get('gpu_total_bytes', 0) / 2**30:.1f} GiB reserved by this worker")
    if not workers:
        print("(no worker has a current heartbeat)")


def _print_jobs(jobs: dict[str, int], failures: list[dict[str, Any]]) -> None:
    print(f"\njobs: {jobs.get('created', 0)} created, {jobs.get('succeeded', 0)} succeeded, "
          f"{jobs.get('failed', 0)} failed, {jobs.get('cancelled', 0)} cancelled")
    for failure in failures:
        error = failure["error"] or {}
        when = time.strftime("%H:%M:%S", time.localtime(failure["finished_at"] or 0))
        print(f"  failed {when} {failure['id']} {failure['name']}: step {error.get('step')!r} "
              f"{error.get('type')}: {str(error.get('message'))[:100]}")


def _ready(args: argparse.Namespace) -> int:
    import socket

    from mmq.tasks import heartbeats
    from mmq.tasks.settings import Settings

    from ..operations import workers_here

    host = socket.gethostname()
    beats = workers_here(Settings.from_env().redis.sync_client(), args.specialisation, host)  # Redis away: 5
    phases = {w["phase"]: w for w in beats}
    if heartbeats.Phase.READY.value in phases:
        return 0
    if loading := phases.get(heartbeats.Phase.LOADING.value):
        print(f"mmq: not ready: the {args.specialisation} worker on {host} is {heartbeats.describe(loading)}",
              file=sys.stderr)
        return 0 if args.live else EXIT_FAILED
    if failed := phases.get(heartbeats.Phase.FAILED.value):
        print(f"mmq: not ready: the {args.specialisation} worker on {host} could not load its model: "
              f"{failed['error']}", file=sys.stderr)
        return EXIT_LOAD_FAILED
    print(f"mmq: no {args.specialisation} worker on {host}", file=sys.stderr)
    return EXIT_FAILED
