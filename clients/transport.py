"""What `Client` needs from the system, whichever way it reaches it: Redis and S3 directly
(inside the cluster, `DirectTransport`) or the HTTP gateway (from outside, `GatewayTransport`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from mmq.tasks.artifact_walk import map_artifacts
from mmq.tasks.errors import JobNotFound
from mmq.tasks.fields import Field
from mmq.tasks.pipelines import Pipeline
from mmq.tasks.records import JobPage, JobRecord, JobStatus
from mmq.tasks.webhooks import WebhookSpec

from .artifact import Artifact


class Transport(Protocol):
    def submit(self, target: str | Pipeline | Mapping[str, Any], inputs: Mapping[str, Any], *,
               idempotency_key: str | None, webhook: WebhookSpec | None) -> str:
        """Queue a task or pipeline (a name, a `Pipeline` or its JSON form); returns the job id."""

    def ask(self, request: str, inputs: Mapping[str, Any], *, dry_run: bool, idempotency_key: str | None,
            webhook: WebhookSpec | None) -> str:
        """Queue an ask (the plan, then the pipeline planned), or with `dry_run` the plan alone."""

    def submit_many(self, target: str | Pipeline | Mapping[str, Any], inputs: list[Mapping[str, Any]]) -> list[str]:
        """Queue one job per mapping of inputs; returns their ids in order."""

    def record(self, job_id: str) -> JobRecord: ...

    def status(self, job_id: str) -> JobStatus: ...

    def events(self, job_id: str, *, after: str, deadline: float | None) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's events after stream id `after`, as they come, until the job ends or the
        monotonic `deadline` passes (then the iterator just stops)."""

    def cancel(self, job_id: str) -> bool: ...

    def list_jobs(self, *, limit: int, cursor: str | None) -> JobPage: ...

    def catalogue(self) -> list[dict[str, Any]]: ...

    def input_schema(self, name: str) -> Mapping[str, Field]: ...

    def upload(self, source: Any, media_type: str | None) -> Any:
        """Store a file; returns a value that stands for it in a job's inputs."""

    def artifacts(self, record: JobRecord) -> dict[str, Any]:
        """The record's outputs with artifact references as `Artifact` objects."""

    def waiting(self, record: JobRecord) -> str | None:
        """Why the job does not move, when a queue it waits on has no ready worker ("no caption
        worker is ready: <its last load error>"); None otherwise."""

    def close(self) -> None: ...


def artifact_outputs(outputs: Mapping[str, Any] | None, make: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """Outputs with every artifact reference (also inside lists) turned into `make(ref_dict)`."""
    return {k: map_artifacts(v, make) for k, v in (outputs or {}).items()}


def job_list(page: JobPage, record: Callable[[str], JobRecord]) -> dict[str, Any]:
    """A page of jobs as `GET /v1/jobs` answers and `mmq jobs list --json` prints it: each job's
    id, name, status and times (`record` reads it), newest first, and the next page's cursor."""
    jobs = []
    for job_id in page.ids:
        try:
            job = record(job_id)
        except JobNotFound:  # expired between the listing and the read
            continue
        jobs.append({"id": job.id, "name": job.name, "status": job.status.value,
                     "created_at": job.created_at, "finished_at": job.finished_at})
    return {"jobs": jobs, "next_cursor": page.next_cursor}


def jsonable(value: Any) -> Any:
    """Outputs as JSON: artifacts become their reference with a URL."""
    return map_artifacts(value, lambda artifact: artifact.to_dict(), kind=Artifact)
