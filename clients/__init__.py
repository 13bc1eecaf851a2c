"""mmq's producers: the Python SDKs (sync and asyncio), the `mmq` CLI and the HTTP gateway.
Never imports `mmq.workers` or torch."""

from .aio import AsyncArtifact, AsyncClient, AsyncJob
from .artifact import Artifact
from .client import Client, Job

__all__ = ["Artifact", "AsyncArtifact", "AsyncClient", "AsyncJob", "Client", "Job"]
