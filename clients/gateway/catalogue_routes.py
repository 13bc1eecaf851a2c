"""The catalogue: every task and pipeline this gateway runs, with its input and output schemas. No key needed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from . import schemas
from .dependencies import SharedGateway
from .error_responses import errors

router = APIRouter(prefix="/v1/pipelines", tags=["catalogue"])

CATALOGUE_LINKS = {"GetFirstPipeline": {
    "operationId": "get_pipeline", "parameters": {"name": "$response.body#/pipelines/0/name"},
    "description": "The first entry of the catalogue, alone."}}


@router.get("", response_model=schemas.Catalogue, operation_id="list_pipelines",
            summary="Tasks and pipelines, with schemas", responses={200: {"links": CATALOGUE_LINKS}})
def list_pipelines(gateway: SharedGateway) -> Any:
    return {"pipelines": gateway.transport.catalogue()}


@router.get("/{name}", responses=errors(404, 422), operation_id="get_pipeline", summary="One task or pipeline")
def get_pipeline(gateway: SharedGateway, name: Annotated[str, Path(max_length=200)]) -> dict[str, Any]:
    return gateway.transport.pipeline(name).describe()
