"""The client outside the cluster: the same methods as inside, through the HTTP gateway.

Files given as inputs are uploaded first (a presigned URL from the gateway, then a PUT straight to
S3); events come from the gateway's server-sent event stream; artifacts are read from the presigned
URLs in the job's view. Gateway errors come back as the same mmq exceptions a direct client raises;
a gateway that cannot be reached is GatewayUnavailable, an artifact store that cannot be reached
through a presigned URL StorageUnavailable, and an expired presigned URL ArtifactAccessDenied.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mmq.tasks.artifact_walk import find_artifacts, map_artifacts
from mmq.tasks.artifacts import ArtifactRef
from mmq.tasks.errors import InvalidInput, JobNotFound
from mmq.tasks.fields import Field, field_from_description
from mmq.tasks.media_types import sniff_media_type
from mmq.tasks.pipelines import Pipeline
from mmq.tasks.records import JobPage, JobRecord, JobStatus
from mmq.tasks.specfiles import pipeline_to_dict
from mmq.tasks.translation import GATEWAY, STORAGE, http_errors, presigned_answer_error
from mmq.tasks.webhooks import WebhookSpec

from .artifact import Artifact
from .asking import ask_values
from .error_codes import exception_for
from .transport import artifact_outputs

TIMEOUT_S = 60.0


class GatewayTransport:
    def __init__(self, url: str, api_key: str | None, *, http: Any = None) -> None:
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = http or httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT_S)
        self._views: dict[str, dict[str, Any]] = {}  # the last view of each job: its artifact URLs

    # -- calls -----------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        with http_errors(GATEWAY, self.url):
            response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise exception_for(response.status_code, _body(response), gateway=self.url)
        return response.json()

    # -- submitting ------------------------------------------------------------------------

    def submit(self, target: str | Pipeline | Mapping[str, Any], inputs: Mapping[str, Any], *,
               idempotency_key: str | None = None, webhook: WebhookSpec | None = None) -> str:
        pipeline = pipeline_to_dict(target) if isinstance(target, Pipeline) else target
        body: dict[str, Any] = {"pipeline": pipeline,
                                "inputs": {k: self._input(v) for k, v in inputs.items()}}
        if webhook is not None:
            body["webhook"] = webhook.to_dict()
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        view = self._call("POST", "/v1/jobs", json=body, headers=headers)
        self._views[view["id"]] = view
        return view["id"]

    def ask(self, request: str, inputs: Mapping[str, Any], *, dry_run: bool = False,
            idempotency_key: str | None = None, webhook: WebhookSpec | None = None) -> str:
        """`POST /v1/plans` (a plan-only job) or `POST /v1/jobs` with `ask`; the gateway tells the
        kinds of the inputs from the files themselves."""
        values, _kinds = ask_values(inputs)  # refused here, before any upload, when one is unreadable
        resolved = {k: self._input(v) for k, v in values.items()}
        body: dict[str, Any] = {"request": request, "inputs": resolved} if dry_run else {"ask": request, "inputs": resolved}
        if webhook is not None:
            body["webhook"] = webhook.to_dict()
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        view = self._call("POST", "/v1/plans" if dry_run else "/v1/jobs", json=body, headers=headers)
        self._views[view["id"]] = view
        return view["id"]

    def submit_many(self, target: str | Pipeline | Mapping[str, Any], inputs: list[Mapping[str, Any]]) -> list[str]:
        """One request per job: the gateway has no bulk route, so this is the plain loop."""
        return [self.submit(target, job_inputs) for job_inputs in inputs]

    def _input(self, value: Any) -> Any:
        """An input as the gateway takes it: references as JSON, files (bytes, a Path) uploaded."""
        return map_artifacts(value, self._file_input, kind=(Artifact, ArtifactRef, bytes, Path))

    def _file_input(self, file: Artifact | ArtifactRef | bytes | Path) -> Any:
        if isinstance(file, Artifact):
            return file.ref.to_dict()
        return file.to_dict() if isinstance(file, ArtifactRef) else self.upload(file)

    def upload(self, source: Path | str | bytes, media_type: str | None = None) -> dict[str, str]:
        """Upload a file through a presigned URL; returns the input value that names it.

        Its SHA-256, size and media type (sniffed from the content unless given) are declared first:
        S3 checks the body against them, and the gateway uses the file without reading it."""
        if isinstance(source, bytes):
            data = source
        else:
            try:
                data = Path(source).read_bytes()
            except OSError as exc:
                raise InvalidInput(f"cannot read {str(source)!r}: {exc.strerror}") from None
        upload = self._call("POST", "/v1/uploads", json={
            "media_type": media_type or sniff_media_type(data), "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest()})
        import httpx

        with http_errors(STORAGE, upload["url"]):
            response = httpx.put(upload["url"], content=data, headers=upload.get("headers") or {}, timeout=TIMEOUT_S)
        if response.status_code >= 300:
            raise presigned_answer_error(response.status_code, response.text, upload["url"],
                                         f"upload {upload['id']}")
        return upload["input"]

    # -- reading ---------------------------------------------------------------------------

    def view(self, job_id: str) -> dict[str, Any]:
        view = self._call("GET", f"/v1/jobs/{_checked_id(job_id)}")
        self._views[job_id] = view
        return view

    def record(self, job_id: str) -> JobRecord:
        return JobRecord.from_dict(self.view(job_id))

    def status(self, job_id: str) -> JobStatus:
        return JobStatus(self.view(job_id)["status"])

    def events(self, job_id: str, *, after: str = "0",
               deadline: float | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        import httpx

        # Heartbeats arrive every few seconds, so reads never wait longer than this between lines.
        timeout = httpx.Timeout(TIMEOUT_S, read=30.0)
        while True:
            with http_errors(GATEWAY, self.url), self.http.stream(
                    "GET", f"/v1/jobs/{_checked_id(job_id)}/events", params={"after": after},
                    timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise exception_for(response.status_code, _body(response), gateway=self.url)
                event_id, name, data = None, None, None
                for line in response.iter_lines():
                    if deadline is not None and time.monotonic() >= deadline:
                        return
                    if line.startswith("id:"):
                        event_id = line[3:].strip()
                    elif line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line[5:].strip())
                    elif line == "" and name == "error":  # the stream's last: Redis went away behind it
                        raise exception_for(response.status_code, data, gateway=self.url)
                    elif line == "" and data is not None:
                        after = event_id or after
                        yield after, data
                        if data["type"] == "job" and JobStatus(data["status"]).terminal:
                            return
                        event_id, name, data = None, None, None
            if self.status(job_id).terminal:  # the stream ended without an end event: expired or trimmed
                return

    def cancel(self, job_id: str) -> bool:
        return bool(self._call("DELETE", f"/v1/jobs/{_checked_id(job_id)}")["cancelled"])

    def list_jobs(self, *, limit: int = 20, cursor: str | None = None) -> JobPage:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        body = self._call("GET", "/v1/jobs", params=params)
        return JobPage(ids=[job["id"] for job in body["jobs"]], next_cursor=body["next_cursor"])

    def catalogue(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/pipelines")["pipelines"]

    def input_schema(self, name: str) -> Mapping[str, Field]:
        entry = self._call("GET", f"/v1/pipelines/{name}")
        return {key: field_from_description(value) for key, value in entry["inputs"].items()}

    def waiting(self, record: JobRecord) -> str | None:
        return (self._views.get(record.id) or self.view(record.id)).get("waiting")

    def artifacts(self, record: JobRecord) -> dict[str, Any]:
        urls = _urls(self._views.get(record.id) or self.view(record.id))
        source = _PresignedSource(urls)
        return artifact_outputs(record.outputs, lambda ref: Artifact(ArtifactRef.from_dict(ref), source))

    def close(self) -> None:
        self.http.close()


class _PresignedSource:
    """Artifact bytes and URLs from the presigned URLs that the gateway put in a job's view."""

    def __init__(self, urls: Mapping[str, str]) -> None:
        self._urls = urls

    def presigned_url(self, ref: ArtifactRef) -> str:
        return self._urls[ref.uri]

    def get_bytes(self, ref: ArtifactRef) -> bytes:
        import httpx

        url = self._urls[ref.uri]
        with http_errors(STORAGE, url):
            response = httpx.get(url, timeout=TIMEOUT_S)
        if response.status_code >= 300:
            raise presigned_answer_error(response.status_code, response.text, url, ref.uri)
        return response.content


def _body(response: Any) -> Any:
    """An error answer's body: its JSON, else its text (a proxy's page, say)."""
    try:
        return response.json()
    except ValueError:
        return response.text


def _urls(view: Mapping[str, Any]) -> dict[str, str]:
    """The presigned URL of each artifact in a job's view, by its URI."""
    return {ref["uri"]: ref["url"] for ref in find_artifacts(view) if "url" in ref}


def _checked_id(job_id: str) -> str:
    if not (len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)):
        raise JobNotFound(f"no job with id {job_id!r} (unknown, or expired)")
    return job_id
