"""API keys and tenants, kept in Redis: `mmq keys create|list|revoke`, and what the gateway checks.

A key reads `mmq_<id>_<secret>`. Only its SHA-256 is stored, under its id; the id alone names the
key in lists and revocations. Each tenant also has a webhook signing secret, made with its first
key. Unlike job records these never expire: they are configuration, removed by revoking. With
Redis away, every method raises BrokerUnavailable (the gateway answers 503, not 401).

  mmq:apikey:<id>    hash: tenant, name, sha256, created_at, revoked_at
  mmq:apikeys        set of key ids
  mmq:tenant:<name>  hash: webhook_secret, created_at
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from mmq.tasks.errors import AuthenticationFailed, InvalidInput
from mmq.tasks.tenants import check_tenant_name
from mmq.tasks.translation import redis_errors

KEY_HASH_PREFIX = "mmq:apikey:"
KEY_INDEX = "mmq:apikeys"
TENANT_PREFIX = "mmq:tenant:"
KEY_WORD = "mmq"


@dataclass(frozen=True)
class ApiKey:
    """What is known about a key, never the key itself."""

    id: str
    tenant: str
    name: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "tenant": self.tenant, "name": self.name, "created_at": self.created_at,
                "revoked_at": self.revoked_at, "active": self.active}


class KeyStore:
    """The API keys and tenants in Redis."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis

    @classmethod
    def from_settings(cls, settings: Any) -> KeyStore:
        return cls(settings.redis.sync_client())

    def create(self, tenant: str, name: str = "") -> tuple[ApiKey, str]:
        """A new key for `tenant` (made on first use): its record and the key, shown only now."""
        check_tenant_name(tenant)
        key_id = secrets.token_hex(6)
        plaintext = f"{KEY_WORD}_{key_id}_{secrets.token_urlsafe(24)}"
        now = time.time()
        with redis_errors(self._redis):
            self._redis.hsetnx(*_secret_field(tenant), "whsec_" + secrets.token_urlsafe(24))
            self._redis.hsetnx(TENANT_PREFIX + tenant, "created_at", repr(now))
            self._redis.hset(KEY_HASH_PREFIX + key_id, mapping={
                "tenant": tenant, "name": name, "sha256": _digest(plaintext), "created_at": repr(now)})
            self._redis.sadd(KEY_INDEX, key_id)
        return ApiKey(key_id, tenant, name, now), plaintext

    def list(self, tenant: str | None = None) -> list[ApiKey]:
        with redis_errors(self._redis):
            members = self._redis.smembers(KEY_INDEX)
        keys = [self._load(member.decode()) for member in members]
        return sorted((k for k in keys if k and (tenant is None or k.tenant == tenant)), key=lambda k: k.created_at)

    def revoke(self, key_id: str) -> ApiKey:
        key = self._load(key_id)
        if key is None:
            raise InvalidInput(f"no API key with id {key_id!r}", field="id")
        if key.active:
            with redis_errors(self._redis):
                self._redis.hset(KEY_HASH_PREFIX + key_id, "revoked_at", repr(time.time()))
        return self._load(key_id)

    def authenticate(self, plaintext: str | None) -> str:
        """The tenant of an active key; `AuthenticationFailed` for anything else."""
        if not plaintext:
            raise AuthenticationFailed("missing API key: send it as 'Authorization: Bearer <key>'")
        word, _, rest = plaintext.partition("_")
        key_id = rest.split("_", 1)[0]
        stored = self._hash(KEY_HASH_PREFIX + key_id) if word == KEY_WORD and key_id else {}
        if not stored or not hmac.compare_digest(stored["sha256"], _digest(plaintext)):
            raise AuthenticationFailed("unknown API key")
        if "revoked_at" in stored:
            raise AuthenticationFailed(f"API key {key_id} was revoked")
        return stored["tenant"]

    def webhook_secret(self, tenant: str) -> str | None:
        with redis_errors(self._redis):
            return _text(self._redis.hget(*_secret_field(tenant)))

    def _load(self, key_id: str) -> ApiKey | None:
        raw = self._hash(KEY_HASH_PREFIX + key_id)
        if not raw:
            return None
        return ApiKey(key_id, raw["tenant"], raw.get("name", ""), float(raw["created_at"]),
                      float(raw["revoked_at"]) if "revoked_at" in raw else None)

    def _hash(self, key: str) -> dict[str, str]:
        with redis_errors(self._redis):
            raw = self._redis.hgetall(key)
        return {k.decode(): v.decode() for k, v in raw.items()}


async def read_webhook_secret(redis: Any, tenant: str) -> str | None:
    """`KeyStore.webhook_secret` on a redis.asyncio client, for the webhook dispatcher's event loop."""
    return _text(await redis.hget(*_secret_field(tenant)))


def _secret_field(tenant: str) -> tuple[str, str]:
    """Where a tenant's webhook signing secret is kept: its hash, and the field."""
    return TENANT_PREFIX + tenant, "webhook_secret"


def _text(raw: bytes | None) -> str | None:
    return raw.decode() if raw is not None else None


def _digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()
