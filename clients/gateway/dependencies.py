"""The routes' dependencies: the app's `Gateway`, the caller's tenant (from its API key), the job
record a caller may read (with its key, or a job page token), and the parameters routes share.

Each is an `Annotated` type, so that a route names what it needs in its signature
(`owner: Tenant`, `record: ReadableRecord`) and FastAPI resolves it, per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mmq.tasks.records import JobRecord

from .state import Gateway

JOB_ID_PATTERN = r"^[0-9a-f]{32}$"

_bearer = HTTPBearer(auto_error=False, description="An API key from `mmq keys create`.")


def current_gateway(request: Request) -> Gateway:
    """The `Gateway` that `create_app` built for this app."""
    return request.app.state.gateway


SharedGateway = Annotated[Gateway, Depends(current_gateway)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def caller_tenant(gateway: SharedGateway, credentials: Credentials) -> str:
    """The tenant of the API key that the request carries (401 without a valid one)."""
    return gateway.tenant(credentials)


Tenant = Annotated[str, Depends(caller_tenant)]
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="A job id.")]
PageToken = Annotated[str | None, Query(description="A job page token (from the job's `links.page`), "
                                                    "instead of an API key: read-only, for this job only.")]


def readable_record(job_id: JobId, gateway: SharedGateway, credentials: Credentials,
                    token: PageToken = None) -> JobRecord:
    """The job, if the caller may read it: with its owner's key, or with a page token for it."""
    return gateway.readable_record(job_id, credentials, token)


def owned_record(job_id: JobId, gateway: SharedGateway, owner: Tenant) -> JobRecord:
    """The job, if the caller's key is its owner's; another tenant's job is answered as unknown."""
    return gateway.owned_record(job_id, owner)


ReadableRecord = Annotated[JobRecord, Depends(readable_record)]
OwnedRecord = Annotated[JobRecord, Depends(owned_record)]
