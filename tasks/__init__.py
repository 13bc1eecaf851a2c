"""mmq's contract: settings, the Celery app and routing, job and artifact types, task and pipeline specs.

Imports neither `mmq.workers` nor `mmq.clients`, and never torch.
"""

from .artifacts import ArtifactRef, ArtifactStore
from .catalogue import PIPELINES, TASKS, describe_all, lookup
from .errors import (
    ArtifactAccessDenied,
    ArtifactNotFound,
    BrokerError,
    BrokerUnavailable,
    ConfigurationError,
    ContentFiltered,
    GatewayUnavailable,
    InvalidInput,
    InvalidPipeline,
    JobNotFound,
    JobTimeout,
    MMQError,
    ModelLoadFailed,
    NoPipelineFits,
    OutOfMemory,
    ServiceUnavailable,
    StackError,
    StorageError,
    StorageUnavailable,
    UnknownTask,
)
from .fields import Field, Kind
from .records import JobRecord, JobStatus, JobStore, StepSpec, StepState
from .pipelines import Format, Pipeline, Step
from .taskspec import Output, TaskSpec
from .settings import Settings
from .specialisation_specs import SPECIALISATIONS, SpecialisationSpec

__all__ = [
    "ArtifactAccessDenied", "ArtifactNotFound", "ArtifactRef", "ArtifactStore", "BrokerError",
    "BrokerUnavailable", "ConfigurationError", "ContentFiltered", "Field", "Format", "GatewayUnavailable",
    "InvalidInput", "InvalidPipeline", "JobNotFound", "JobRecord", "JobStatus", "JobStore", "JobTimeout", "Kind",
    "MMQError", "ModelLoadFailed", "NoPipelineFits", "OutOfMemory", "Output", "PIPELINES", "Pipeline",
    "SPECIALISATIONS", "ServiceUnavailable", "Settings", "SpecialisationSpec", "StackError", "Step",
    "StepSpec", "StepState",
    "StorageError", "StorageUnavailable", "TASKS", "TaskSpec", "UnknownTask", "describe_all", "lookup",
]
