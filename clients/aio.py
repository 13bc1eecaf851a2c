"""`AsyncClient`: the SDK for asyncio apps, with the same methods as `Client`, awaited.

    async with AsyncClient.from_env() as client:
        job = await client.submit("imagine", prompt="a lighthouse at dusk")
        async for event in job.events():
            ...
        record = await job.wait(timeout_s=300)
        image = (await job.outputs)["image"]
        await image.download("lighthouse.png")

The work is `Client`'s, run in worker threads: Redis, boto3 and Celery's producer are blocking
libraries, and an event loop must never wait on them. So one code path serves both SDKs.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from mmq.tasks.artifact_walk import map_artifacts
from mmq.tasks.fields import Field
from mmq.tasks.pipelines import Pipeline
from mmq.tasks.records import JobRecord, JobStatus

from .artifact import Artifact
from .client import Client, Job

T = TypeVar("T")
_END = object()


async def _in_thread(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(functools.partial(call, *args, **kwargs))


class AsyncClient:
    """Submits jobs and reads them without blocking the event loop; directly or through the gateway."""

    def __init__(self, client: Client | None = None, **options: Any) -> None:
        """`AsyncClient(settings=...)` or `AsyncClient(gateway_url=..., api_key=...)`, as `Client`."""
        self.sync = client or Client(**options)

    @classmethod
    def from_env(cls) -> AsyncClient:
        return cls(Client.from_env())

    async def submit(self, name: str, /, *, idempotency_key: str | None = None, webhook: Any = None,
                     **inputs: Any) -> AsyncJob:
        job = await _in_thread(self.sync.submit, name, idempotency_key=idempotency_key, webhook=webhook, **inputs)
        return AsyncJob(job)

    async def submit_pipeline(self, spec: Pipeline | Mapping[str, Any], /, *, idempotency_key: str | None = None,
                              webhook: Any = None, **inputs: Any) -> AsyncJob:
        job = await _in_thread(self.sync.submit_pipeline, spec, idempotency_key=idempotency_key,
                               webhook=webhook, **inputs)
        return AsyncJob(job)

    async def ask(self, request: str, /, *, dry_run: bool = False, idempotency_key: str | None = None,
                  webhook: Any = None, **inputs: Any) -> AsyncJob:
        """`Client.ask`: a request in words, planned into a pipeline, then run as one job."""
        job = await _in_thread(self.sync.ask, request, dry_run=dry_run, idempotency_key=idempotency_key,
                               webhook=webhook, **inputs)
        return AsyncJob(job)

    async def submit_many(self, name: str | Pipeline | Mapping[str, Any],
                          inputs: list[Mapping[str, Any]]) -> list[AsyncJob]:
        return [AsyncJob(job) for job in await _in_thread(self.sync.submit_many, name, inputs)]

    async def job(self, job_id: str) -> AsyncJob:
        return AsyncJob(await _in_thread(self.sync.job, job_id))

    async def jobs(self, *, limit: int = 20, cursor: str | None = None) -> tuple[list[AsyncJob], str | None]:
        jobs, next_cursor = await _in_thread(self.sync.jobs, limit=limit, cursor=cursor)
        return [AsyncJob(job) for job in jobs], next_cursor

    async def cancel(self, job_id: str) -> bool:
        return await _in_thread(self.sync.cancel, job_id)

    async def pipelines(self) -> list[dict[str, Any]]:
        return await _in_thread(self.sync.pipelines)

    async def input_schema(self, name: str) -> Mapping[str, Field]:
        return await _in_thread(self.sync.input_schema, name)

    async def upload(self, source: Path | str | bytes, media_type: str | None = None) -> Any:
        return _async_value(await _in_thread(self.sync.upload, source, media_type))

    async def close(self) -> None:
        await _in_thread(self.sync.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncJob:
    """A submitted job, awaited: `await job.status()`, `await job.wait()`, `async for e in job.events()`."""

    def __init__(self, job: Job) -> None:
        self.sync = job
        self.id = job.id

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"

    async def record(self) -> JobRecord:
        return await _in_thread(self.sync.record)

    async def status(self) -> JobStatus:
        return await _in_thread(self.sync.status)

    async def cancel(self) -> bool:
        return await _in_thread(self.sync.cancel)

    async def wait(self, timeout_s: float | None = None) -> JobRecord:
        return await _in_thread(self.sync.wait, timeout_s)

    async def waiting(self) -> str | None:
        """Why the job does not move, when a queue it waits on has no ready worker."""
        return await _in_thread(self.sync.waiting)

    async def events(self, timeout_s: float | None = None) -> AsyncIterator[dict[str, Any]]:
        iterator = self.sync.events(timeout_s)
        while (event := await _in_thread(next, iterator, _END)) is not _END:
            yield event

    @property
    def outputs(self) -> Awaitable[dict[str, Any]]:
        """`await job.outputs`: outputs with artifacts as `AsyncArtifact`s."""
        async def read() -> dict[str, Any]:
            return {k: _async_value(v) for k, v in (await _in_thread(lambda: self.sync.outputs)).items()}

        return read()

    @property
    def error(self) -> Awaitable[dict[str, str] | None]:
        return _in_thread(lambda: self.sync.error)

    async def download(self, folder: Path | str) -> list[Path]:
        return await _in_thread(self.sync.download, folder)

    async def to_dict(self) -> dict[str, Any]:
        return await _in_thread(self.sync.to_dict)


class AsyncArtifact:
    """An artifact whose reads are awaited; `.url`, `.uri` and the rest as on `Artifact`."""

    def __init__(self, artifact: Artifact) -> None:
        self.sync = artifact

    def __getattr__(self, name: str) -> Any:  # ref, uri, media_type, sha256, size, url, to_dict
        return getattr(self.sync, name)

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"

    async def read(self) -> bytes:
        return await _in_thread(self.sync.read)

    async def download(self, path: Path | str) -> Path:
        return await _in_thread(self.sync.download, path)


def _async_value(value: Any) -> Any:
    return map_artifacts(value, AsyncArtifact, kind=Artifact)
