"""Tenants: who owns a job and its artifacts.

A job submitted through the gateway belongs to the tenant of the API key that submitted it; its
artifacts live under that tenant's key prefix, and no reference outside the prefix is accepted
from that tenant. Jobs submitted directly (inside the cluster) have no owner.
"""

from __future__ import annotations

import posixpath
import re

from .errors import InvalidInput

TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def check_tenant_name(name: str) -> str:
    if not TENANT_PATTERN.fullmatch(name):
        raise InvalidInput(f"tenant names are 1-63 characters of a-z, 0-9 and '-', got {name!r}", field="tenant")
    return name


def artifact_prefix(owner: str | None) -> str:
    """The key prefix under which the artifacts of `owner`'s jobs are stored."""
    return f"tenants/{check_tenant_name(owner)}/" if owner else ""


def key_within(key: str, prefix: str) -> bool:
    """True when the object key `key` lies under `prefix` and cannot climb out of it."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        return False
    if any(part in ("", ".", "..") for part in key.split("/")):
        return False
    return posixpath.normpath(key) == key and key.startswith(prefix)
