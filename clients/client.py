"""The Python SDK: submit a task or pipeline, get a `Job` back at once, wait for its outputs.

    client = Client.from_env()
    job = client.submit("remix", image=Path("house.png"), steps=20)
    job.wait(timeout_s=300)
    job.outputs["image"].url
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from mmq.tasks.artifacts import ArtifactRef, ArtifactStore
from mmq.tasks.canvas import build_canvas
from mmq.tasks.catalogue import TASKS, describe_all, lookup
from mmq.tasks.celery_app import make_celery
from mmq.tasks.errors import BrokerUnavailable, InvalidInput, JobTimeout
from mmq.tasks.fields import Field
from mmq.tasks.jobs import JobRecord, JobStatus, JobStore, StepSpec
from mmq.tasks.media import sniff_media_type
from mmq.tasks.pipelines import Pipeline, step_to_dict
from mmq.tasks.settings import Settings
from mmq.tasks.specfiles import load_pipeline_folder, pipeline_from_dict

from .artifact import Artifact


class Client:
    """Submits jobs through Redis and reads their records; artifacts go to S3 directly."""

    def __init__(self, *, settings: Settings, jobs: JobStore | None = None,
                 store: ArtifactStore | None = None, pipelines: Mapping[str, Pipeline] | None = None) -> None:
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

    @classmethod
    def from_env(cls) -> Client:
        """Settings from the environment (and the local stack's file, when `mmq up` wrote one)."""
        return cls(settings=Settings.from_env())

    def submit(self, name: str, /, **inputs: Any) -> Job:
        """Queue the task or pipeline `name`; files (paths or bytes) are uploaded as artifacts."""
        return self._submit(self.pipeline(name), inputs)

    def submit_pipeline(self, spec: Pipeline | Mapping[str, Any], /, **inputs: Any) -> Job:
        """Queue an ad-hoc pipeline: a `Pipeline` value or its JSON/YAML form (checked first)."""
        pipeline = spec.validate(TASKS) if isinstance(spec, Pipeline) else pipeline_from_dict(spec, TASKS)
        return self._submit(pipeline, inputs)

    def pipeline(self, name: str) -> Pipeline:
        return lookup(name, self.extra_pipelines)

    def cancel(self, job_id: str) -> bool:
        """Cancel a job: queued steps never start, a running step stops at its next check.
        Returns False when the job had already ended."""
        record = self.jobs.get(job_id)
        cancelled = self.jobs.finish(job_id, JobStatus.CANCELLED)
        if cancelled:  # best effort: the record, checked by every step, is what really stops it
            ids = [s.celery_id for s in record.steps]
            try:
                self._celery.control.revoke(ids)
            except Exception:  # kombu raises many types; revocation is only an optimisation
                pass
        return cancelled

    def _submit(self, pipeline: Pipeline, inputs: Mapping[str, Any]) -> Job:
        where = f"{'task' if pipeline.name in TASKS and len(pipeline.steps) == 1 else 'pipeline'} {pipeline.name!r}"
        pending = {k: _pending_file(k, v, pipeline.inputs.get(k)) for k, v in inputs.items()}
        # Check everything before uploading anything: placeholders stand in for the files.
        pipeline.check_inputs({k: _placeholders(p) for k, p in pending.items()}, where=where)
        uploaded = {k: self._upload_pending(p) for k, p in pending.items()}
        checked = pipeline.check_inputs(uploaded, where=where)
        return self._enqueue(pipeline, checked)

    def job(self, job_id: str) -> Job:
        """A handle on an existing job (raises `JobNotFound` when there is none)."""
        self.jobs.status(job_id)
        return Job(job_id, self)

    def pipelines(self) -> list[dict[str, Any]]:
        """Every pipeline and task with its input and output schema."""
        return describe_all(self.extra_pipelines)

    def upload(self, source: Path | str | bytes, media_type: str | None = None) -> Artifact:
        ref = self.store.put_bytes(source, media_type) if isinstance(source, bytes) \
            else self.store.put_file(source, media_type)
        return Artifact(ref, self.store)

    def _upload_pending(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._upload_pending(item) for item in value]
        if isinstance(value, _PendingFile):
            return self.store.put_bytes(value.data, value.media_type)
        return value

    def _enqueue(self, pipeline: Pipeline, inputs: Mapping[str, Any]) -> Job:
        job_id = uuid.uuid4().hex
        levels = pipeline.levels()
        record = JobRecord(
            id=job_id, name=pipeline.name,
            inputs={k: _to_json(v) for k, v in inputs.items()},
            steps=[StepSpec(name=s.name, task=s.task, queue=TASKS[s.task].specialisation,
                            celery_id=f"{job_id}-{i}", bind=step_to_dict(s)["bind"], each=dict(s.each),
                            level=levels[s.name])
                   for i, s in enumerate(pipeline.ordered())],
            output_map=dict(pipeline.outputs), created_at=time.time(),
        )
        self.jobs.create(record)  # the record exists before any worker can see a step
        try:
            build_canvas(self._celery, record).apply_async()
        except Exception as exc:  # kombu raises many types; the job must not stay queued forever
            self.jobs.finish(job_id, JobStatus.FAILED,
                             error={"step": "submit", "type": type(exc).__name__, "message": str(exc)})
            raise BrokerUnavailable(f"could not queue job {job_id}: {exc}") from None
        return Job(job_id, self)

    def close(self) -> None:
        self._celery.close()


class Job:
    """A submitted job: its status, its record, its outputs once it has succeeded."""

    def __init__(self, job_id: str, client: Client) -> None:
        self.id = job_id
        self._client = client

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def record(self) -> JobRecord:
        return self._client.jobs.get(self.id)

    def status(self) -> JobStatus:
        return self._client.jobs.status(self.id)

    def cancel(self) -> bool:
        """Cancel this job; False when it had already ended."""
        return self._client.cancel(self.id)

    def events(self, timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """The job's status and progress events as they happen, from the first, until it ends.

        Each is a dict: `{"type": "job", "status": ...}` or `{"type": "step", "step": ...,
        "status": ..., "progress": [done, total], "item"?: i}`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        after = "0"
        while True:
            batch = self._client.jobs.events(self.id, after=after, block_ms=500)
            for after, event in batch:
                yield event
                if event["type"] == "job" and JobStatus(event["status"]).terminal:
                    return
            if not batch and self.status().terminal:  # nothing left to read, and no end event:
                return  # the stream was trimmed or expired
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(f"job {self.id} still running after {timeout_s} s")

    def wait(self, timeout_s: float | None = None) -> JobRecord:
        """Block until the job ends (succeeded, failed or cancelled); returns its final record."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        delay = 0.05
        while not (record := self.record()).status.terminal:
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(f"job {self.id} still {record.status.value} after {timeout_s} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        return record

    @property
    def outputs(self) -> dict[str, Any]:
        """Outputs with artifacts as `Artifact` objects (`.url`, `.download()`); empty until done."""
        return self._client_outputs(self.record())

    @property
    def error(self) -> dict[str, str] | None:
        return self.record().error

    def to_dict(self, record: JobRecord | None = None) -> dict[str, Any]:
        """The summary that `mmq run --json` prints: id, status, outputs (with URLs), error."""
        record = record or self.record()
        outputs = {k: v.to_dict() if isinstance(v, Artifact) else v
                   for k, v in self._client_outputs(record).items()}
        return {"id": record.id, "name": record.name, "status": record.status.value,
                "outputs": outputs, "error": record.error}

    def _client_outputs(self, record: JobRecord) -> dict[str, Any]:
        store = self._client.store
        return {k: Artifact(ArtifactRef.from_dict(v), store) if ArtifactRef.is_ref(v) else v
                for k, v in (record.outputs or {}).items()}


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
        if media_type.split("/")[0] != field.kind.value:
            raise InvalidInput(f"{name}: {path.name} is not an {field.kind.value} "
                               f"(its content looks like {media_type})", field=name)
        return _PendingFile(data, media_type)
    return value
