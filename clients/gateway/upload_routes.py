"""Uploads: a presigned URL to PUT a file to, and the job input that names the file (see `uploads.py`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from . import schemas
from .dependencies import SharedGateway, Tenant
from .error_responses import errors

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


@router.post("", status_code=201, response_model=schemas.Upload, responses=errors(400, 401, 413, 422, 503),
             operation_id="create_upload", summary="Get a presigned URL to upload a file to")
def create_upload(gateway: SharedGateway, owner: Tenant, request: schemas.UploadRequest | None = None) -> Any:
    request = request or schemas.UploadRequest()
    return gateway.uploads.create(owner, media_type=request.media_type, size=request.size, sha256=request.sha256)
