"""An artifact as a user sees it: a reference that turns into a URL or a file only when asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmq.tasks.artifacts import ArtifactRef, ArtifactStore


class Artifact:
    def __init__(self, ref: ArtifactRef, store: ArtifactStore) -> None:
        self.ref = ref
        self._store = store

    def __repr__(self) -> str:
        return f"Artifact({self.ref.uri!r}, {self.ref.media_type!r}, {self.ref.size} bytes)"

    uri = property(lambda self: self.ref.uri)
    media_type = property(lambda self: self.ref.media_type)
    sha256 = property(lambda self: self.ref.sha256)
    size = property(lambda self: self.ref.size)

    @property
    def url(self) -> str:
        """A presigned GET URL, valid for the configured expiry."""
        return self._store.presigned_url(self.ref)

    def read(self) -> bytes:
        return self._store.get_bytes(self.ref)

    def download(self, path: Path | str) -> Path:
        """Write the artifact to `path` (a file, or a folder to put it in); returns the file."""
        return self._store.download(self.ref, path)

    def to_dict(self) -> dict[str, Any]:
        return {**self.ref.to_dict(), "url": self.url}
