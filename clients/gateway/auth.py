"""Who is calling: the tenant of an API key, or the holder of a job page's token.

A page token opens one job's page, read-only, until it expires: the browser then needs no API
key, and a link to the page can be handed on without handing on the key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from mmq.tasks.errors import AuthenticationFailed
from mmq.tasks.translation import redis_errors

SECRET_KEY = "mmq:gateway:secret"  # shared by every gateway replica, so any of them checks any token


class PageTokens:
    """Issues and checks job page tokens, signed with a secret that every gateway replica reads from Redis."""

    def __init__(self, secret: str, *, expiry_s: int) -> None:
        self._secret = secret.encode()
        self.expiry_s = expiry_s

    @classmethod
    def from_redis(cls, redis: Any, *, expiry_s: int) -> PageTokens:
        """The shared secret, made by the first replica to ask (BrokerUnavailable without Redis)."""
        with redis_errors(redis):
            redis.set(SECRET_KEY, secrets.token_urlsafe(32), nx=True)
            secret = redis.get(SECRET_KEY)
        return cls(secret.decode(), expiry_s=expiry_s)

    def issue(self, job_id: str, *, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.expiry_s)
        return f"{expires}.{self._mac(job_id, expires)}"

    def check(self, job_id: str, token: str | None) -> None:
        expires_raw, _, mac = (token or "").partition(".")
        if not expires_raw.isdigit() or not hmac.compare_digest(mac, self._mac(job_id, int(expires_raw))):
            raise AuthenticationFailed("this job page link is not valid; ask the API for a new one")
        if int(expires_raw) < time.time():
            raise AuthenticationFailed("this job page link has expired; ask the API for a new one")

    def _mac(self, job_id: str, expires: int) -> str:
        return hmac.new(self._secret, f"{job_id}.{expires}".encode(), hashlib.sha256).hexdigest()[:32]

