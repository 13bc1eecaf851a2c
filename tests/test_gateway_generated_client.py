"""A client generated from the committed OpenAPI document (docs/openapi.json) by openapi-python-client,
with no configuration and no warning, works against a real gateway: it uploads a file, submits a job
that uses it, reads the job, lists it, cancels it and follows its events to the end, and reads the
typed error bodies.

Real: a gateway process over a private Redis and the session's SeaweedFS. No worker serves that Redis,
so the job waits in its queue until it is cancelled.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx

from tests.conftest import launch_gateway, stop

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
PACKAGE = "mmq_gateway_client"  # what the generator names it, from the document's title


def generate_client(folder: Path, monkeypatch) -> SimpleNamespace:
    """Generate the client package into `folder` and import the parts the test uses."""
    generator = Path(sys.executable).with_name("openapi-python-client")
    env = {**os.environ, "PATH": f"{generator.parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff
    made = subprocess.run([str(generator), "generate", "--path", str(DOCUMENT), "--meta", "none",
                           "--output-path", str(folder / PACKAGE)], check=False, env=env, capture_output=True,
                          text=True)
    said = made.stdout + made.stderr
    assert made.returncode == 0 and "warning" not in said.lower(), said
    monkeypatch.syspath_prepend(str(folder))
    for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
        monkeypatch.delitem(sys.modules, name)  # a fresh import of this generation
    names = ["api.uploads.create_upload", "api.jobs.submit_job", "api.jobs.get_job", "api.jobs.list_jobs",
             "api.jobs.cancel_job", "api.jobs.follow_job_events", "models"]
    modules = {name.rsplit(".", 1)[-1]: importlib.import_module(f"{PACKAGE}.{name}") for name in names}
    return SimpleNamespace(client=importlib.import_module(PACKAGE), **modules)


def test_a_generated_client_submits_reads_lists_cancels_and_follows_a_job(make_stack, tmp_path, sample_image,
                                                                       monkeypatch):
    api = generate_client(tmp_path / "generated", monkeypatch)
    gateway = launch_gateway(make_stack(), tmp_path)
    try:
        client = api.client.AuthenticatedClient(base_url=gateway.url, token=gateway.new_key("acme"),
                                                timeout=httpx.Timeout(30.0))
        image = sample_image.read_bytes()
        upload = api.create_upload.sync(client=client, body=api.models.UploadRequest(
            media_type="image/png", size=len(image), sha256=hashlib.sha256(image).hexdigest()))
        assert isinstance(upload, api.models.Upload), upload
        put = httpx.put(upload.url, content=image, headers=upload.headers.additional_properties)
        assert put.status_code == 200, put.text

        request = api.models.JobRequest.from_dict({"pipeline": "caption",
                                                   "inputs": {"image": upload.to_dict()["input"]}})
        submitted = api.submit_job.sync_detailed(client=client, body=request, idempotency_key="generated-1")
        job = submitted.parsed
        assert submitted.status_code == 201 and isinstance(job, api.models.JobView), submitted.content
        assert job.status == "queued"
        assert job.inputs["image"]["uri"].startswith("s3://mmq-test/tenants/acme/blobs/")

        read = api.get_job.sync(job_id=job.id, client=client)
        assert isinstance(read, api.models.JobView) and read.id == job.id and read.steps[0].queue == "caption"
        listed = api.list_jobs.sync(client=client, limit=10)
        assert [summary.id for summary in listed.jobs] == [job.id] and listed.next_cursor is None

        cancellation = api.cancel_job.sync(job_id=job.id, client=client)
        assert (cancellation.id, cancellation.cancelled, cancellation.status) == (job.id, True, "cancelled")
        stream = api.follow_job_events.sync(job_id=job.id, client=client)  # ends with the job
        assert "event: job.queued" in stream and stream.rstrip().endswith('"status": "cancelled"}'), stream
        assert api.get_job.sync(job_id=job.id, client=client).status == "cancelled"

        unknown = api.get_job.sync(job_id="0" * 32, client=client)
        assert isinstance(unknown, api.models.ErrorBody) and unknown.error.code == "job_not_found"
        stranger = api.client.AuthenticatedClient(base_url=gateway.url, token="mmq_0a1b2c3d4e5f_wrong")
        assert api.list_jobs.sync(client=stranger).error.code == "unauthorized"
    finally:
        stop(gateway.process.pid, timeout_s=20)
