"""An artifact as a user sees it: a reference that turns into a URL or a file only when asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from mmq.tasks.artifacts import ArtifactRef


class ArtifactSource(Protocol):
    """Where an artifact's bytes and URL come from: the store itself, or the gateway."""

    def presigned_url(self, ref: ArtifactRef) -> str: ...

    def get_bytes(self, ref: ArtifactRef) -> bytes: ...


class Artifact:
    def __init__(self, ref: ArtifactRef, source: ArtifactSource) -> None:
        self.ref = ref
        self._source = source

    def __repr__(self) -> str:
        return f"Artifact({self.ref.uri!r}, {self.ref.media_type!r}, {self.ref.size} bytes)"

    uri = property(lambda self: self.ref.uri)
    media_type = property(lambda self: self.ref.media_type)
    sha256 = property(lambda self: self.ref.sha256)
    size = property(lambda self: self.ref.size)

    @property
    def url(self) -> str:
        """A presigned GET URL, valid for the configured expiry."""
        return self._source.presigned_url(self.ref)

    def read(self) -> bytes:
        return self._source.get_bytes(self.ref)

    def download(self, path: Path | str) -> Path:
        """Write the artifact to `path` (a file, or a folder to put it in); returns the file."""
        path = Path(path)
        if path.is_dir():
            path = path / Path(self.ref.key).name
        path.write_bytes(self.read())
        return path

    def to_dict(self) -> dict[str, Any]:
        return {**self.ref.to_dict(), "url": self.url}
