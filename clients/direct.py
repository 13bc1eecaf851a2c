"""The client inside the cluster: job records in Redis, steps to Celery, files to S3 directly."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from mmq.tasks import heartbeats
from mmq.tasks.artifacts import ArtifactRef, ArtifactStore
from mmq.tasks.canvas import build_canvas
from mmq.tasks.catalogue import TASKS, describe_all, lookup
from mmq.tasks.celery_app import make_celery
from mmq.tasks.errors import BrokerUnavailable, ConfigurationError, InvalidInput
from mmq.tasks.fields import Field
from mmq.tasks.jobs import JobPage, JobRecord, JobStatus, JobStore, StepSpec
from mmq.tasks.media import sniff_media_type
from mmq.tasks.pipelines import Pipeline, step_to_dict
from mmq.tasks.settings import Settings
from mmq.tasks.specfiles import load_pipeline_folder, pipeline_from_dict
from mmq.tasks.tenants import artifact_prefix
from mmq.tasks.webhooks import WebhookSpec

from .artifact import Artifact
from .transport import artifact_outputs


class DirectTransport:
    """Submits jobs through Redis and reads their records; artifacts go to S3 directly.

    `owner` is the tenant the jobs belong to (the gateway passes the caller's); None inside the
    cluster, where every job is visible."""

    def __init__(self, settings: Settings, *, jobs: JobStore | None = None, store: ArtifactStore | None = None,
                 pipelines: Mapping[str, Pipeline] | None = None) -> None:
        self.settings = settings
        self.jobs = jobs or JobStore.from_settings(settings)
        self.store = store or ArtifactStore.from_settings(settings)
        # Pipelines of the pipelines folder (YAML/JSON), beside the built-in ones.
        self.extra_pipelines = dict(pipelines if pipelines is not None
                                    else load_pipeline_folder(settings.pipelines_dir, TASKS))
        self._celery = make_celery(settings)
        # Producers never wait on Celery results (the job record is the truth), so they need not
        # subscribe to each task's result channel, as the Redis result backend does on every send.
        self._celery.backend.on_task_call = lambda producer, task_id: None

    # -- submitting --------------------------------------------------------------------------

    def pipeline(self, target: str | Pipeline | Mapping[str, Any]) -> Pipeline:
        if isinstance(target, Pipeline):
            return target.validate(TASKS)
        if isinstance(target, Mapping):
            return pipeline_from_dict(target, TASKS)
        return lookup(target, self.extra_pipelines)

    def submit(self, target: str | Pipeline | Mapping[str, Any], inputs: Mapping[str, Any], *,
               idempotency_key: str | None = None, webhook: WebhookSpec | None = None,
               owner: str | None = None) -> str:
        pipeline = self.pipeline(target)
        kind = "task" if pipeline.name in TASKS and len(pipeline.steps) == 1 else "pipeline"
        where = f"{kind} {pipeline.name!r}"
        pending = {k: _pending_file(k, v, pipeline.inputs.get(k)) for k, v in inputs.items()}
        # Check everything before uploading anything: placeholders stand in for the files.
        pipeline.check_inputs({k: _placeholders(p) for k, p in pending.items()}, where=where)
        if webhook is not None and owner is None and not self.settings.webhook_secret:
            raise ConfigurationError("a webhook of a job submitted inside the cluster is signed with "
                                     "MMQ_WEBHOOK_SECRET, which is not set")
        prefix = artifact_prefix(owner)
        uploaded = {k: self._upload_pending(p, prefix) for k, p in pending.items()}
        checked = pipeline.check_inputs(uploaded, where=where)
        return self._enqueue(pipeline, checked, idempotency_key=idempotency_key, webhook=webhook, owner=owner)

    def submit_many(self, target: str | Pipeline | Mapping[str, Any], inputs: Iterable[Mapping[str, Any]], *,
                    owner: str | None = None) -> list[str]:
        """Queue one job per inputs mapping, all checked first: one Redis round trip for the records
        and one broker connection for the messages, so thousands are queued per second."""
        pipeline = self.pipeline(target)
        where = f"{'task' if pipeline.name in TASKS and len(pipeline.steps) == 1 else 'pipeline'} {pipeline.name!r}"
        pending = []
        for index, job_inputs in enumerate(inputs):
            files = {k: _pending_file(k, v, pipeline.inputs.get(k)) for k, v in job_inputs.items()}
            pipeline.check_inputs({k: _placeholders(f) for k, f in files.items()}, where=f"{where} (job {index})")
            pending.append(files)
        prefix = artifact_prefix(owner)
        records = [self._record(pipeline, pipeline.check_inputs(
            {k: self._upload_pending(f, prefix) for k, f in files.items()}, where=where), webhook=None, owner=owner)
            for files in pending]
        since = self.jobs.primary()
        self.jobs.create_many(records)
        queued = 0
        try:
            with self._celery.producer_or_acquire() as producer:
                for record in records:
                    build_canvas(self._celery, record).apply_async(producer=producer)
                    queued += 1
        except Exception as exc:  # kombu raises many types; no job may stay queued with no message
            for record in records[queued:]:
                self.jobs.finish(record.id, JobStatus.FAILED, error={
                    "step": "submit", "type": type(exc).__name__, "message": str(exc)})
            raise BrokerUnavailable(f"queued {queued} of {len(records)} jobs: {exc}") from None
        self.jobs.confirm([record.id for record in records], since)  # on a replica before we say so
        return [record.id for record in records]

    def _upload_pending(self, value: Any, prefix: str) -> Any:
        if isinstance(value, list):
            return [self._upload_pending(item, prefix) for item in value]
        if isinstance(value, _PendingFile):
            return self.store.put_bytes(value.data, value.media_type, prefix=prefix)
        return value

    def _record(self, pipeline: Pipeline, inputs: Mapping[str, Any], *, webhook: WebhookSpec | None,
                owner: str | None) -> JobRecord:
        job_id = uuid.uuid4().hex
        levels = pipeline.levels()
        return JobRecord(
            id=job_id, name=pipeline.name,
            inputs={k: _to_json(v) for k, v in inputs.items()},
            steps=[StepSpec(name=s.name, task=s.task, queue=TASKS[s.task].specialisation,
                            celery_id=f"{job_id}-{i}", bind=step_to_dict(s)["bind"], each=dict(s.each),
                            level=levels[s.name])
                   for i, s in enumerate(pipeline.ordered())],
            output_map=dict(pipeline.outputs), created_at=time.time(), owner=owner,
            webhook=webhook.to_dict() if webhook else None,
        )

    def _enqueue(self, pipeline: Pipeline, inputs: Mapping[str, Any], *, idempotency_key: str | None,
                 webhook: WebhookSpec | None, owner: str | None) -> str:
        record = self._record(pipeline, inputs, webhook=webhook, owner=owner)
        job_id = record.id
        idempotency = (idempotency_key, _fingerprint(pipeline, record)) if idempotency_key else None
        since = self.jobs.primary()
        # The record exists before any worker can see a step.
        created = self.jobs.create(record, webhook_events=webhook.filter_string() if webhook else "",
                                   idempotency=idempotency)
        if created == job_id:
            try:
                build_canvas(self._celery, record).apply_async()
            except Exception as exc:  # kombu raises many types; the job must not stay queued forever
                self.jobs.finish(job_id, JobStatus.FAILED,
                                 error={"step": "submit", "type": type(exc).__name__, "message": str(exc)})
                raise BrokerUnavailable(f"could not queue job {job_id}: {exc}") from None
        # (else the idempotency key named this job before: nothing new is queued.) Under Sentinel, a
        # replica holds the record and the step messages before the caller is told the job exists.
        self.jobs.confirm([created], since)
        return created

    # -- reading -------------------------------------------------------------------------------

    def record(self, job_id: str) -> JobRecord:
        return self.jobs.get(job_id)

    def status(self, job_id: str) -> JobStatus:
        return self.jobs.status(job_id)

    def events(self, job_id: str, *, after: str = "0",
               deadline: float | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        while True:
            block_ms = 500 if deadline is None else max(1, min(500, int((deadline - time.monotonic()) * 1000)))
            batch = self.jobs.events(job_id, after=after, block_ms=block_ms)
            for after, event in batch:
                yield after, event
                if event["type"] == "job" and JobStatus(event["status"]).terminal:
                    return
            if not batch and self.jobs.status(job_id).terminal:  # nothing left to read, and no end
                return  # event: the stream was trimmed or expired
            if deadline is not None and time.monotonic() >= deadline:
                return

    def cancel(self, job_id: str) -> bool:
        """Cancel a job: queued steps never start, a running step stops at its next check.
        Returns False when the job had already ended."""
        record = self.jobs.get(job_id)
        cancelled = self.jobs.finish(job_id, JobStatus.CANCELLED)
        if cancelled:  # best effort: the record, checked by every step, is what really stops it
            try:
                self._celery.control.revoke([s.celery_id for s in record.steps])
            except Exception:  # kombu raises many types; revocation is only an optimisation
                pass
        return cancelled

    def list_jobs(self, *, limit: int = 20, cursor: str | None = None, owner: str | None = None) -> JobPage:
        return self.jobs.list(owner, limit=limit, cursor=cursor)

    def catalogue(self) -> list[dict[str, Any]]:
        return describe_all(self.extra_pipelines)

    def input_schema(self, name: str) -> Mapping[str, Field]:
        return lookup(name, self.extra_pipelines).inputs

    def upload(self, source: Path | str | bytes, media_type: str | None = None, *, prefix: str = "") -> Artifact:
        ref = self.store.put_bytes(source, media_type, prefix=prefix) if isinstance(source, bytes) \
            else self.store.put_file(source, media_type, prefix=prefix)
        return Artifact(ref, self.store)

    def artifacts(self, record: JobRecord) -> dict[str, Any]:
        return artifact_outputs(record.outputs, lambda ref: Artifact(ArtifactRef.from_dict(ref), self.store))

    def waiting(self, record: JobRecord) -> str | None:
        return heartbeats.waiting_reason(self.jobs.redis, record)

    def close(self) -> None:
        self._celery.close()


def _fingerprint(pipeline: Pipeline, record: JobRecord) -> str:
    """What makes two submissions the same request: the pipeline, the inputs, the webhook."""
    request = {"pipeline": pipeline.name, "steps": [step_to_dict(s) for s in pipeline.ordered()],
               "inputs": record.inputs, "webhook": record.webhook}
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


class _PendingFile:
    """A file input read and typed, not yet uploaded."""

    def __init__(self, data: bytes, media_type: str) -> None:
        self.data = data
        self.media_type = media_type
        self.placeholder = ArtifactRef(uri="s3://pending/upload", media_type=media_type, sha256="", size=len(data))


def _to_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_to_json(item) for item in value]
    return value.to_dict() if isinstance(value, ArtifactRef) else value


def _placeholders(value: Any) -> Any:
    if isinstance(value, list):
        return [_placeholders(item) for item in value]
    return value.placeholder if isinstance(value, _PendingFile) else value


def _pending_file(name: str, value: Any, field: Field | None) -> Any:
    """Paths and bytes given for a file input become pending uploads; other values pass through."""
    if field is not None and field.many and isinstance(value, (list, tuple)):
        return [_pending_file(f"{name}[{i}]", item, replace(field, many=False)) for i, item in enumerate(value)]
    if field is None or not field.kind.is_artifact or isinstance(value, (ArtifactRef, Artifact, Mapping)):
        return value.ref if isinstance(value, Artifact) else value
    if isinstance(value, bytes):
        return _PendingFile(value, sniff_media_type(value))
    if isinstance(value, (str, Path)):
        path = Path(value)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"{name}: cannot read {str(path)!r}: {exc.strerror}", field=name) from None
        media_type = sniff_media_type(data)
        if not field.kind.accepts(media_type):
            raise InvalidInput(f"{name}: {path.name} is not an {field.kind.value} "
                               f"(its content looks like {media_type})", field=name)
        return _PendingFile(data, media_type)
    return value
