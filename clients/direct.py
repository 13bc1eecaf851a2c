"""The client inside the cluster: job records in Redis, steps to Celery, files to S3 directly."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from mmq.tasks import heartbeats
from mmq.tasks.artifact_walk import find_artifacts, map_artifacts, map_named
from mmq.tasks.artifacts import ArtifactRef, ArtifactStore
from mmq.tasks.asking import PLAN_TASK, ask_inputs, ask_pipeline, plan_inputs
from mmq.tasks.canvas import build_canvas
from mmq.tasks.catalogue import TASKS, describe_all, lookup
from mmq.tasks.celery_app import make_celery
from mmq.tasks.errors import BrokerUnavailable, ConfigurationError, InvalidInput
from mmq.tasks.fields import Field
from mmq.tasks.media_types import sniff_media_type
from mmq.tasks.pipelines import Pipeline
from mmq.tasks.records import (
    JobPage,
    JobRecord,
    JobStatus,
    JobStore,
    describe_target,
    new_record,
    new_records,
)
from mmq.tasks.settings import Settings
from mmq.tasks.specfiles import load_pipeline_folder, pipeline_from_dict
from mmq.tasks.step_messages import first_step_message
from mmq.tasks.tenants import artifact_prefix
from mmq.tasks.webhooks import WebhookSpec

from .artifact import Artifact
from .asking import ask_values
from .transport import artifact_outputs

# Redis commands one publish batch holds before it is sent: a submit_many chunk in one pipeline.
_BATCH_MAX = 100_000
# A bulk submission with files queues its jobs a chunk at a time, each chunk as soon as its files
# are stored, so that workers start on the first jobs while the rest upload: a first chunk of a
# few jobs, then twice as many each time up to _UPLOAD_CHUNK (4, 8, 16, 16, ...). The files of a
# chunk upload _UPLOAD_THREADS at a time.
_FIRST_UPLOAD_CHUNK = 4
_UPLOAD_CHUNK = 16
_UPLOAD_THREADS = 4


class DirectTransport:
    """Submits jobs through Redis and reads their records; artifacts go to S3 directly.

    `owner` is the tenant the jobs belong to (the gateway passes the caller's); None inside the
    cluster, where every job is visible."""

    def __init__(self, settings: Settings, *, redis: Any = None, jobs: JobStore | None = None,
                 store: ArtifactStore | None = None, pipelines: Mapping[str, Pipeline] | None = None) -> None:
        self.settings = settings
        # A redis-py client for the job records and the worker heartbeats (`waiting`).
        self._redis = redis or settings.redis.sync_client()
        self.jobs = jobs or JobStore(self._redis, ttl_s=settings.record_ttl_s,
                                         finished_ttl_s=settings.finished_ttl_s)
        self.store = store or ArtifactStore.from_settings(settings)
        # Pipelines of the pipelines folder (YAML/JSON), beside the built-in ones.
        self.extra_pipelines = dict(pipelines if pipelines is not None
                                    else load_pipeline_folder(settings.pipelines_dir, TASKS))
        self._celery = make_celery(settings)  # subscribes to no result channel (MmqCelery)

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
        files = self._read_files(pipeline, inputs, where=describe_target(pipeline))
        if webhook is not None and owner is None and not self.settings.webhook_secret:
            raise ConfigurationError("a webhook of a job submitted inside the cluster is signed with "
                                     "MMQ_WEBHOOK_SECRET, which is not set")
        record = new_record(pipeline, self._upload_files(files, owner), owner=owner, webhook=webhook)
        since = self.jobs.primary()
        # The record exists before any worker can see a step: a one-step job's message is queued
        # with it, in the same step; other canvases after it, through Celery.
        message = first_step_message(self._celery, record)
        created = self.jobs.create(record, idempotency_key=idempotency_key, message=message)
        if created == record.id and message is None:
            try:
                build_canvas(self._celery, record).apply_async()
            except Exception as exc:  # kombu raises many types; the job must not stay queued forever
                self._fail_unqueued(record, exc)
                raise BrokerUnavailable(f"could not queue job {record.id}: {exc}") from None
        # (else the idempotency key named this job before: nothing new is queued.) Under Sentinel, a
        # replica holds the record and the step messages before the caller is told the job exists.
        self.jobs.confirm([created], since)
        return created

    def ask(self, request: str, inputs: Mapping[str, Any], *, dry_run: bool = False,
            idempotency_key: str | None = None, webhook: WebhookSpec | None = None,
            owner: str | None = None) -> str:
        """Queue an ask: the `plan` task, then (unless `dry_run`) the pipeline it writes, as one job."""
        values, kinds = ask_values(inputs)
        if dry_run:
            return self.submit(PLAN_TASK, plan_inputs(request, kinds), idempotency_key=idempotency_key,
                               webhook=webhook, owner=owner)
        return self.submit(ask_pipeline(kinds), ask_inputs(request, kinds, values), idempotency_key=idempotency_key,
                           webhook=webhook, owner=owner)

    def submit_many(self, target: str | Pipeline | Mapping[str, Any], inputs: Iterable[Mapping[str, Any]], *,
                    owner: str | None = None) -> list[str]:
        """Queue one job per inputs mapping, all checked before any file is stored or any job
        queued: one Redis round trip for the records and one broker connection for the messages,
        so thousands are queued per second. Jobs with files are queued a chunk at a time, each as
        soon as its files are stored (workers start on the first few while the rest upload). All or
        nothing: when this raises, every job it had queued is failed (one that has finished keeps
        its outcome), and a worker that receives one of their steps finds it ended."""
        pipeline = self.pipeline(target)
        where = describe_target(pipeline)
        pending = [self._read_files(pipeline, job_inputs, where=f"{where} (job {index})")
                   for index, job_inputs in enumerate(inputs)]
        since = self.jobs.primary()
        queued: list[JobRecord] = []
        if not any(_has_files(files) for files in pending):
            queued = self._queue_many(pipeline, pending, owner, queued)
        else:
            with ThreadPoolExecutor(_UPLOAD_THREADS, thread_name_prefix="mmq-upload") as uploads:
                for chunk in _upload_chunks(pending):
                    try:
                        stored = list(uploads.map(lambda files: self._upload_files(files, owner), chunk))
                    except Exception as exc:
                        if queued:
                            self._fail_unqueued_many(queued, exc)
                        raise
                    queued = self._queue_many(pipeline, stored, owner, queued)
        self.jobs.confirm([record.id for record in queued], since)  # on a replica before we say so
        return [record.id for record in queued]

    def _queue_many(self, pipeline: Pipeline, inputs: list[Mapping[str, Any]], owner: str | None,
                    queued: list[JobRecord]) -> list[JobRecord]:
        """Create and queue one job per inputs mapping, after `queued` (the chunks before): all of
        them failed when this chunk's messages cannot be sent."""
        records = new_records(pipeline, inputs, owner=owner)
        messages = [first_step_message(self._celery, record) for record in records]
        if all(message is not None for message in messages):
            # One-step jobs: each record with its message, all in one round trip, without Celery's
            # send path. A job that could not be queued has no record; the chunks before are failed.
            try:
                self.jobs.create_many(records, messages=messages)
            except Exception as exc:  # noqa: BLE001 - some jobs of the chunk may be queued
                with contextlib.suppress(Exception):  # Redis away: nothing more can be written
                    self._fail_unqueued_many(queued + records, exc)
                raise BrokerUnavailable(f"could not queue {len(records)} jobs: {exc}") from None
            return queued + records
        self.jobs.create_many(records)
        try:
            self._publish(records)
        except Exception as exc:  # kombu raises many types; no job may stay queued with no message
            # One pipeline that failed may have delivered some of its messages: every job of the
            # chunk fails (and those queued before it), and a worker that receives the message of
            # one finds it ended.
            self._fail_unqueued_many(queued + records, exc)
            raise BrokerUnavailable(f"could not queue {len(records)} jobs: {exc}") from None
        return queued + records

    def _publish(self, records: list[JobRecord]) -> None:
        """The step messages of `records`, pushed to Redis through one pipeline (kombu's publish
        batch) rather than one round trip each; no queue is declared per message (`declare=[]`):
        on Redis a message goes straight to its queue's list, and workers declare their queues."""
        with self._celery.producer_or_acquire() as producer, producer.batch(max_size=_BATCH_MAX):
            for record in records:
                build_canvas(self._celery, record).apply_async(producer=producer, declare=[])

    def _read_files(self, pipeline: Pipeline, inputs: Mapping[str, Any], *, where: str) -> dict[str, Any]:
        """The inputs with each file (a path or bytes) read and typed, not yet uploaded; all of them
        checked first, with placeholders standing in for the files, so that nothing is uploaded
        for a submission that is refused."""
        files = {k: _pending_file(k, v, pipeline.inputs.get(k)) for k, v in inputs.items()}
        pipeline.check_inputs({k: _placeholders(f) for k, f in files.items()}, where=where)
        return files

    def _upload_files(self, files: Mapping[str, Any], owner: str | None) -> dict[str, Any]:
        prefix = artifact_prefix(owner)
        return {k: self._upload_pending(value, prefix) for k, value in files.items()}

    def _upload_pending(self, value: Any, prefix: str) -> Any:
        return map_artifacts(value, lambda file: self.store.put_bytes(file.data, file.media_type, prefix=prefix),
                             kind=_PendingFile)

    def _fail_unqueued(self, record: JobRecord, exc: Exception) -> None:
        """A job whose step messages could not be sent fails at once, instead of staying queued."""
        self.jobs.finish(record.id, JobStatus.FAILED,
                         error={"step": "submit", "type": type(exc).__name__, "message": str(exc)})

    def _fail_unqueued_many(self, records: list[JobRecord], exc: Exception) -> None:
        error = {"step": "submit", "type": type(exc).__name__, "message": str(exc)}
        self.jobs.finish_many([record.id for record in records], JobStatus.FAILED, error=error)

    # -- reading -------------------------------------------------------------------------------

    def record(self, job_id: str) -> JobRecord:
        return self.jobs.get(job_id)

    def status(self, job_id: str) -> JobStatus:
        return self.jobs.status(job_id)

    def events(self, job_id: str, *, after: str = "0",
               deadline: float | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        return self.jobs.follow(job_id, after=after, deadline=deadline)

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
        return heartbeats.waiting_reason(self._redis, record)

    def close(self) -> None:
        self._celery.close()


class _PendingFile:
    """A file input read and typed, not yet uploaded."""

    def __init__(self, data: bytes, media_type: str) -> None:
        self.data = data
        self.media_type = media_type
        self.placeholder = ArtifactRef(uri="s3://pending/upload", media_type=media_type, sha256="", size=len(data))


def _has_files(inputs: Mapping[str, Any]) -> bool:
    return bool(find_artifacts(inputs, kind=_PendingFile))


def _placeholders(value: Any) -> Any:
    return map_artifacts(value, lambda file: file.placeholder, kind=_PendingFile)


def _pending_file(name: str, value: Any, field: Field | None) -> Any:
    """Paths and bytes given for a file input become pending uploads; other values pass through."""
    if field is not None and field.many and isinstance(value, (list, tuple)):
        return map_named(name, value, lambda label, item: _pending_file(label, item, replace(field, many=False)))
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


def _upload_chunks(pending: list[Any]) -> Iterator[list[Any]]:
    """`pending` in chunks of _FIRST_UPLOAD_CHUNK, twice that, ... up to _UPLOAD_CHUNK: the first
    jobs are queued after a few uploads rather than a whole chunk's."""
    start, size = 0, _FIRST_UPLOAD_CHUNK
    while start < len(pending):
        yield pending[start:start + size]
        start, size = start + size, min(size * 2, _UPLOAD_CHUNK)
