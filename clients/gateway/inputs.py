"""File inputs over HTTP: an upload's id, a URL to fetch, or a reference to the caller's own artifact.

Each becomes the reference (an upload, adopted without being read: see `uploads.py`) or the bytes
(a fetched URL) that the direct client submits, only after checking that it belongs to the caller
and fits the size limit.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from mmq.tasks.artifact_walk import map_named
from mmq.tasks.artifacts import ArtifactRef, ArtifactStore
from mmq.tasks.errors import InvalidInput
from mmq.tasks.settings import Settings
from mmq.tasks.tenants import artifact_prefix, key_within

from .uploads import Uploads, check_file_size, uploads_folder

FETCH_TIMEOUT_S = 30.0


class InputResolver:
    def __init__(self, settings: Settings, store: ArtifactStore, uploads: Uploads) -> None:
        self.settings = settings
        self.store = store
        self.uploads = uploads

    def resolve(self, inputs: Mapping[str, Any], tenant: str) -> dict[str, Any]:
        return {name: self._value(name, value, tenant) for name, value in inputs.items()}

    def _value(self, name: str, value: Any, tenant: str) -> Any:
        return map_named(name, value, lambda label, item: self._item(label, item, tenant))

    def _item(self, name: str, value: Any, tenant: str) -> Any:
        if not isinstance(value, Mapping):
            return value
        if set(value) == {"upload"}:
            return self.uploads.take(name, value["upload"], tenant)
        if set(value) == {"url"}:
            return self._fetch(name, value["url"])
        if ArtifactRef.is_ref(value):
            ref = ArtifactRef.from_dict(value, field=name)
            if ref.bucket != self.store.bucket or not key_within(ref.key, artifact_prefix(tenant)):
                raise InvalidInput(f"{name}: {ref.uri} is not one of your artifacts", field=name)
            if ref.key.startswith(uploads_folder(tenant)):
                raise InvalidInput(f"{name}: {ref.uri} is an upload, not an artifact: pass it as "
                                   f"{{\"upload\": ID}}", field=name)
            return ref
        raise InvalidInput(f"{name}: a file input is {{\"upload\": ID}}, {{\"url\": URL}} or an artifact "
                           f"reference, got an object with {sorted(value)}", field=name)

    def _fetch(self, name: str, url: Any) -> bytes:
        import httpx

        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"{name}: {url!r} is not an http(s) URL", field=name)
        if not self.settings.allow_private_urls:
            _refuse_private(name, parts.hostname)
        chunks, total = [], 0
        deadline = time.monotonic() + FETCH_TIMEOUT_S
        try:
            with httpx.stream("GET", url, timeout=10.0, follow_redirects=False) as response:
                if response.status_code != 200:
                    raise InvalidInput(f"{name}: fetching {url} answered {response.status_code}", field=name)
                self._check_size(name, int(response.headers.get("content-length") or 0))
                for chunk in response.iter_bytes():
                    total += len(chunk)
                    self._check_size(name, total)  # stop reading as soon as it is too big
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise InvalidInput(f"{name}: fetching {url} took over {FETCH_TIMEOUT_S:.0f} s", field=name)
        except httpx.HTTPError as exc:
            raise InvalidInput(f"{name}: could not fetch {url}: {exc}", field=name) from None
        return b"".join(chunks)

    def _check_size(self, name: str, size: int) -> None:
        check_file_size(name, size, self.settings.max_upload_bytes)


def _refuse_private(name: str, host: str) -> None:
    """No fetching from loopback, private or link-local addresses (cloud metadata, cluster services)."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        raise InvalidInput(f"{name}: cannot resolve {host!r}", field=name) from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global:
            raise InvalidInput(f"{name}: {host} is a private address; URL inputs must be public "
                               "(MMQ_ALLOW_PRIVATE_URLS=1 allows them)", field=name)
