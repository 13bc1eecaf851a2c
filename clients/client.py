"""The Python SDK: submit a task or pipeline, get a `Job` back at once, wait for its outputs.

    client = Client.from_env()
    job = client.submit("remix", image=Path("house.png"), steps=20)
    job.wait(timeout_s=300)
    job.outputs["image"].url

Inside the cluster the client talks to Redis and S3 directly; from outside, set MMQ_GATEWAY_URL
and MMQ_API_KEY and the same methods go through the HTTP gateway.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mmq.tasks.errors import JobTimeout
from mmq.tasks.fields import Field
from mmq.tasks.records import JobRecord, JobStatus
from mmq.tasks.pipelines import Pipeline
from mmq.tasks.settings import Settings
from mmq.tasks.webhooks import WebhookSpec

from .transport import Transport, jsonable


class Client:
    """Submits jobs and reads them, directly or through the gateway (see `from_env`)."""

    def __init__(self, *, settings: Settings | None = None, transport: Transport | None = None,
                 gateway_url: str | None = None, api_key: str | None = None, **direct: Any) -> None:
        """`Client(settings=...)` works directly against Redis and S3; `Client(gateway_url=...,
        api_key=...)` through the gateway; `transport` is for what neither covers."""
        if transport is None:
            if gateway_url:
                from .remote import GatewayTransport

                transport = GatewayTransport(gateway_url, api_key)
            else:
                from .direct import DirectTransport

                transport = DirectTransport(settings or Settings.from_env(), **direct)
        self.transport = transport

    @classmethod
    def from_env(cls) -> Client:
        """Through the gateway when MMQ_GATEWAY_URL is set (with MMQ_API_KEY), else directly, with
        settings from the environment (and the local stack's file, when `mmq up` wrote one)."""
        settings = Settings.from_env()
        if settings.gateway_url:
            return cls(gateway_url=settings.gateway_url, api_key=settings.api_key)
        return cls(settings=settings)

    def submit(self, name: str, /, *, idempotency_key: str | None = None,
               webhook: WebhookSpec | Mapping[str, Any] | str | None = None, **inputs: Any) -> Job:
        """Queue the task or pipeline `name`; files (paths or bytes) are uploaded as artifacts.

        A repeated `idempotency_key` returns the job it first created instead of a new one;
        `webhook` (a URL, or `{"url", "events"}`) receives the job's events, signed."""
        return self._submit(name, inputs, idempotency_key, webhook)

    def submit_pipeline(self, spec: Pipeline | Mapping[str, Any], /, *, idempotency_key: str | None = None,
                        webhook: WebhookSpec | Mapping[str, Any] | str | None = None, **inputs: Any) -> Job:
        """Queue an ad-hoc pipeline: a `Pipeline` value or its JSON/YAML form (checked first)."""
        return self._submit(spec, inputs, idempotency_key, webhook)

    def ask(self, request: str, /, *, dry_run: bool = False, idempotency_key: str | None = None,
            webhook: WebhookSpec | Mapping[str, Any] | str | None = None, **inputs: Any) -> Job:
        """Queue a request in words: the `plan` worker writes a pipeline of the catalogue for it and
        the inputs given (files as paths or bytes, texts, numbers), and the pipeline runs as the rest
        of the same job. Its outputs: `plan` (the pipeline) and the pipeline's. With `dry_run`, the
        job plans only. A request that no pipeline fits fails with `NoPipelineFits`, saying why."""
        hook = WebhookSpec.parse(webhook) if webhook is not None else None
        return Job(self.transport.ask(request, inputs, dry_run=dry_run, idempotency_key=idempotency_key,
                                      webhook=hook), self)

    def _submit(self, target: Any, inputs: Mapping[str, Any], idempotency_key: str | None, webhook: Any) -> Job:
        hook = WebhookSpec.parse(webhook) if webhook is not None else None
        return Job(self.transport.submit(target, inputs, idempotency_key=idempotency_key, webhook=hook), self)

    def submit_many(self, name: str | Pipeline | Mapping[str, Any], inputs: Iterable[Mapping[str, Any]]) -> list[Job]:
        """Queue one job per mapping of inputs (all checked before any is queued); in bulk when
        working directly against Redis."""
        return [Job(job_id, self) for job_id in self.transport.submit_many(name, list(inputs))]

    def job(self, job_id: str) -> Job:
        """A handle on an existing job (raises `JobNotFound` when there is none)."""
        self.transport.status(job_id)
        return Job(job_id, self)

    def jobs(self, *, limit: int = 20, cursor: str | None = None) -> tuple[list[Job], str | None]:
        """A page of jobs, newest first, and the cursor of the next page (None at the end)."""
        page = self.transport.list_jobs(limit=limit, cursor=cursor)
        return [Job(job_id, self) for job_id in page.ids], page.next_cursor

    def cancel(self, job_id: str) -> bool:
        """Cancel a job: queued steps never start, a running step stops at its next check.
        Returns False when the job had already ended."""
        return self.transport.cancel(job_id)

    def pipelines(self) -> list[dict[str, Any]]:
        """Every pipeline and task with its input and output schema."""
        return self.transport.catalogue()

    def input_schema(self, name: str) -> Mapping[str, Field]:
        """The inputs of a task or pipeline (`UnknownTask` when there is none)."""
        return self.transport.input_schema(name)

    def upload(self, source: Path | str | bytes, media_type: str | None = None) -> Any:
        """Store a file ahead of time; pass the result as a file input of later jobs."""
        return self.transport.upload(source, media_type)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Job:
    """A submitted job: its status, its record, its outputs once it has succeeded."""

    def __init__(self, job_id: str, client: Client) -> None:
        self.id = job_id
        self._client = client

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def record(self) -> JobRecord:
        return self._client.transport.record(self.id)

    def status(self) -> JobStatus:
        return self._client.transport.status(self.id)

    def cancel(self) -> bool:
        """Cancel this job; False when it had already ended."""
        return self._client.cancel(self.id)

    def events(self, timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """The job's status and progress events as they happen, from the first, until it ends.

        Each is a dict: `{"type": "job", "status": ...}` or `{"type": "step", "step": ...,
        "status": ..., "progress": [done, total], "item"?: i}`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        ended = False
        for _, event in self._client.transport.events(self.id, after="0", deadline=deadline):
            yield event
            ended = event["type"] == "job" and JobStatus(event["status"]).terminal
        if not ended and deadline is not None and time.monotonic() >= deadline and not self.status().terminal:
            raise JobTimeout(f"job {self.id} still running after {timeout_s} s")

    def wait(self, timeout_s: float | None = None) -> JobRecord:
        """Block until the job ends (succeeded, failed or cancelled); returns its final record."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        # Blocking reads of the job's event stream, not polling: woken by the end event itself.
        for _ in self._client.transport.events(self.id, after="0", deadline=deadline):
            pass
        record = self.record()
        if not record.status.terminal:
            waiting = self._client.transport.waiting(record)
            raise JobTimeout(f"job {self.id} still {record.status.value} after {timeout_s} s"
                             + (f": {waiting}" if waiting else ""))
        return record

    def waiting(self) -> str | None:
        """Why the job does not move, when a queue it waits on has no ready worker: "no caption
        worker is ready: <its last load error>". None when it is running, done, or will be taken."""
        return self._client.transport.waiting(self.record())

    @property
    def outputs(self) -> dict[str, Any]:
        """Outputs with artifacts as `Artifact` objects (`.url`, `.download()`); empty until done."""
        return self._client.transport.artifacts(self.record())

    @property
    def error(self) -> dict[str, str] | None:
        return self.record().error

    def download(self, folder: Path | str) -> list[Path]:
        """Write every artifact among the outputs into `folder`; returns the files written."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for name, value in self.outputs.items():
            for index, artifact in enumerate(value if isinstance(value, list) else [value]):
                if hasattr(artifact, "download"):
                    suffix = f"-{index}" if isinstance(value, list) else ""
                    written.append(artifact.download(folder / f"{name}{suffix}{Path(artifact.ref.key).suffix}"))
        return written

    def to_dict(self, record: JobRecord | None = None) -> dict[str, Any]:
        """The summary that `mmq run --json` prints: id, status, outputs (with URLs), error, and
        `waiting` when a queue it waits on has no ready worker."""
        record = record or self.record()
        outputs = {k: jsonable(v) for k, v in self._client.transport.artifacts(record).items()}
        waiting = self._client.transport.waiting(record)
        return {"id": record.id, "name": record.name, "status": record.status.value,
                "outputs": outputs, "error": record.error, **({"waiting": waiting} if waiting else {})}
