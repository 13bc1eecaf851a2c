"""The job record as data: a job's status, its steps as submitted and as they went, its outputs.

Plain dataclasses and a `str` Enum, so JSON needs no converter; where each part is kept in Redis
is `layout.py`'s business.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

# One event of a job's stream: its stream id (what a reader resumes after) and the event itself.
Event = tuple[str, dict[str, Any]]


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def ends_job(event: Mapping[str, Any]) -> bool:
    """Whether an event is the job's end: nothing comes after it."""
    return event["type"] == "job" and JobStatus(event["status"]).terminal


@dataclass
class StepState:
    """What happened to one step: status, deliveries, progress, timings, outputs, error."""

    status: JobStatus = JobStatus.QUEUED
    attempts: int = 0
    progress: tuple[int, int] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    outputs: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    fetch_s: float | None = None  # reading its artifact inputs from storage
    store_s: float | None = None  # writing its artifact outputs

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "status": self.status.value})

    @classmethod
    def from_json(cls, raw: str | bytes) -> StepState:
        data = json.loads(raw)
        data["status"] = JobStatus(data["status"])
        if data.get("progress") is not None:
            data["progress"] = tuple(data["progress"])
        return cls(**data)


@dataclass(frozen=True)
class StepSpec:
    """A step as submitted: its task and queue, its Celery task id, its wiring and its place."""

    name: str
    task: str
    queue: str
    celery_id: str
    bind: dict[str, Any] = field(default_factory=dict)  # input -> ref, or {"format": template}
    each: dict[str, str] = field(default_factory=dict)  # input -> list ref (fan-out)
    level: int = 0  # steps of one level run in parallel, after the levels before
    expands: bool = False  # its output is a pipeline that the job runs next (see mmq.tasks.asking)


@dataclass
class JobRecord:
    """A job as stored: what was asked, where it stands, what came out."""

    id: str
    name: str
    inputs: dict[str, Any]
    steps: list[StepSpec]
    output_map: dict[str, str]
    created_at: float
    status: JobStatus = JobStatus.QUEUED
    started_at: float | None = None
    finished_at: float | None = None
    outputs: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    step_states: dict[str, StepState] = field(default_factory=dict)
    item_states: dict[str, dict[int, StepState]] = field(default_factory=dict)
    owner: str | None = None  # the tenant that submitted it through the gateway; None inside the cluster
    webhook: dict[str, Any] | None = None  # {url, events}
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # webhook attempts, oldest first

    def spec_json(self) -> str:
        """What was asked, as the record's `spec` field keeps it: compact, and without what a
        reader takes as the default (`step_from_spec`; no owner, no webhook), since Redis holds
        one per queued and finished job."""
        steps = [_step_spec(self.id, index, step) for index, step in enumerate(self.steps)]
        spec = {"id": self.id, "name": self.name, "inputs": self.inputs, "steps": steps,
                "output_map": self.output_map, "created_at": self.created_at}
        spec.update({k: v for k, v in (("owner", self.owner), ("webhook", self.webhook)) if v is not None})
        return json.dumps(spec, separators=(",", ":"))

    def step(self, name: str) -> StepSpec:
        return next(s for s in self.steps if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        """The public view: what `mmq jobs get --json` and the SDK show."""
        return {
            "id": self.id, "name": self.name, "status": self.status.value,
            "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at, "inputs": self.inputs,
            "steps": [self._step_dict(s) for s in self.steps],
            "outputs": self.outputs, "error": self.error, "owner": self.owner,
            "webhook": self.webhook, "deliveries": self.deliveries,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRecord:
        """The inverse of `to_dict`: a record read over HTTP."""
        step_fields = {f for f in StepSpec.__dataclass_fields__}
        state_fields = {f for f in StepState.__dataclass_fields__}
        steps, states, items = [], {}, {}
        for raw in data["steps"]:
            steps.append(StepSpec(**{k: v for k, v in raw.items() if k in step_fields}))
            states[raw["name"]] = _state_from_dict(raw, state_fields)
            if "items" in raw:
                items[raw["name"]] = {i: _state_from_dict(item, state_fields) for i, item in enumerate(raw["items"])}
        return cls(id=data["id"], name=data["name"], inputs=data["inputs"], steps=steps, output_map={},
                   created_at=data["created_at"], status=JobStatus(data["status"]),
                   started_at=data.get("started_at"), finished_at=data.get("finished_at"),
                   outputs=data.get("outputs"), error=data.get("error"), step_states=states,
                   item_states=items, owner=data.get("owner"), webhook=data.get("webhook"),
                   deliveries=list(data.get("deliveries") or []))

    def _step_dict(self, step: StepSpec) -> dict[str, Any]:
        out = {**asdict(step), **_state_dict(self.step_states.get(step.name))}
        if step.each:
            items = self.item_states.get(step.name, {})
            out["items"] = [_state_dict(items[i]) for i in sorted(items)]
        return out


def _state_dict(state: StepState | None) -> dict[str, Any]:
    state = state or StepState()
    return {**asdict(state), "status": state.status.value}


def _state_from_dict(raw: Mapping[str, Any], names: set[str]) -> StepState:
    state = StepState(**{k: v for k, v in raw.items() if k in names and k != "status"})
    state.status = JobStatus(raw["status"])
    if state.progress is not None:
        state.progress = tuple(state.progress)
    return state


@dataclass(frozen=True)
class JobPage:
    """One page of a job list, newest first; `next_cursor` fetches the page after it."""

    ids: list[str]
    next_cursor: str | None


@dataclass(frozen=True)
class WebhookTarget:
    """What a webhook delivery needs of a job's record: where it goes, and whose secret signs it."""

    job_name: str
    url: str | None
    owner: str | None  # the tenant whose secret signs it; None: the cluster's MMQ_WEBHOOK_SECRET


def _step_spec(job_id: str, index: int, step: StepSpec) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": step.name, "task": step.task}
    defaults = _step_defaults(job_id, index, step.task)
    spec.update({k: v for k, v in (("queue", step.queue), ("celery_id", step.celery_id), ("bind", step.bind),
                                   ("each", step.each), ("level", step.level), ("expands", step.expands))
                 if v != defaults.get(k)})
    return spec


def step_from_spec(job_id: str, index: int, spec: Mapping[str, Any]) -> StepSpec:
    """Step `index` of a record's `spec`, with the defaults its stored form leaves out."""
    return StepSpec(**{**_step_defaults(job_id, index, spec["task"]), **spec})


def _step_defaults(job_id: str, index: int, task: str) -> dict[str, Any]:
    from ..catalogue import TASKS  # (the catalogue's pipelines check their tasks: no import cycle at load)

    spec = TASKS.get(task)
    return {"queue": spec.specialisation if spec else None, "celery_id": f"{job_id}-{index}",
            # A task submitted alone takes each input from the job's input of that name.
            "bind": {name: f"input.{name}" for name in spec.inputs} if spec else {}, "each": {}, "level": 0,
            "expands": False}
