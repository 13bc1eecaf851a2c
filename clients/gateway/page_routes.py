"""The job page: one job's steps, timings and artifacts in a browser, opened by the token of its link
(`links.page` of the job), not by an API key. Not part of the API: absent from the OpenAPI document."""

from __future__ import annotations

import html
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from mmq.tasks.errors import AuthenticationFailed

from .dependencies import JobId, SharedGateway

router = APIRouter(include_in_schema=False)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: JobId, gateway: SharedGateway, token: Annotated[str | None, Query()] = None) -> HTMLResponse:
    try:
        gateway.tokens.check(job_id, token)
    except AuthenticationFailed as exc:  # a person with a browser reads this, not a program
        return HTMLResponse(f"<!doctype html><meta charset=utf-8><title>mmq job</title><p>{html.escape(str(exc))}</p>",
                            status_code=401)
    return HTMLResponse(resources.files(__package__).joinpath("job.html").read_text(),
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
