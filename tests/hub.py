"""A Hugging Face hub stand-in: an HTTP endpoint speaking the part of the hub's protocol that
huggingface_hub, transformers and diffusers use, serving local folders as model repositories.

The real hub cannot be reached here. Pointing `HF_ENDPOINT` at this server lets the real client
code run its real paths (repository info, file trees, HEAD for metadata, GET for bytes, the error
headers by which it tells a missing file from a missing or gated repository), with what the test
controls on top: a delay per request (a slow hub, so a load takes as long as the test needs) and
a log of every request (to see which files were fetched).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # every repository's one commit


@dataclass
class HubStandIn:
    """Serves `repos` (repository id -> folder) at `url` until `stop()`."""

    repos: Mapping[str, Path]
    delay_s: float = 0.0  # added to every request: a slow hub
    gated: frozenset[str] = frozenset()  # repositories that answer as gated (no access)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path), in order
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubStandIn:
        hub = self

        class Handler(_Handler):
            stand_in = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="hub-stand-in", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def fetched(self) -> list[str]:
        """The files whose bytes were downloaded (GET on resolve), as repo/path."""
        return [path.split("/resolve/", 1)[0].lstrip("/") + "/" + path.split("/resolve/", 1)[1].split("/", 1)[1]
                for method, path in self.requests if method == "GET" and "/resolve/" in path]


class _Handler(BaseHTTPRequestHandler):
    stand_in: HubStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the test reads `requests`
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, *, body: bool) -> None:
        try:
            self._route(body=body)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (a killed worker)
            pass

    def _route(self, *, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.stand_in.requests.append((self.command, path))
        time.sleep(self.stand_in.delay_s)
        if path.startswith("/api/models/"):
            self._api(path.removeprefix("/api/models/"), urlsplit(self.path).query, body=body)
        elif "/resolve/" in path:
            repo, _, rest = path.lstrip("/").partition("/resolve/")
            _revision, _, file_path = rest.partition("/")
            self._file(repo, file_path, body=body)
        else:
            self._error(404, "RepoNotFound", "unknown route")

    def _api(self, rest: str, query: str, *, body: bool) -> None:
        parts = rest.split("/")
        repo = "/".join(parts[:2])
        if not self._repo_ok(repo):
            return
        folder = self.stand_in.repos[repo]
        if len(parts) <= 2 or parts[2] == "revision":
            files = list(_files(folder))
            self._json({"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "disabled": False,
                        "gated": False, "downloads": 0, "likes": 0, "tags": [], "library_name": None,
                        "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
                        "siblings": [{"rfilename": name, "size": size} for name, size in files],
                        "usedStorage": sum(size for _, size in files)}, body=body)
        elif parts[2] == "tree":
            under = "/".join(parts[4:])
            if not (folder / under).is_dir():
                self._error(404, "EntryNotFound", f"no folder {under} in {repo}")
                return
            recursive = "recursive=true" in query.lower() or "recursive=1" in query
            self._json(_tree(folder, under, recursive), body=body)
        else:
            self._error(404, "EntryNotFound", "unknown api route")

    def _file(self, repo: str, file_path: str, *, body: bool) -> None:
        if not self._repo_ok(repo):
            return
        target = self.stand_in.repos[repo] / file_path
        if not target.is_file():
            self._error(404, "EntryNotFound", f"{file_path} is not in {repo}")
            return
        data = target.read_bytes()
        etag = hashlib.sha256(data).hexdigest()
        start, end = 0, len(data)
        status = 200
        ranged = self.headers.get("Range")
        if ranged and ranged.startswith("bytes="):
            first, _, last = ranged.removeprefix("bytes=").partition("-")
            start, end = int(first or 0), (int(last) + 1 if last else len(data))
            status = 206
        self.send_response(status)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Linked-Etag", f'"{etag}"')
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if body:
            self.wfile.write(data[start:end])

    def _repo_ok(self, repo: str) -> bool:
        if repo in self.stand_in.gated:
            self._error(403, "GatedRepo", f"access to {repo} is restricted: accept its conditions first")
            return False
        if repo not in self.stand_in.repos:
            self._error(404, "RepoNotFound", f"repository {repo} not found")
            return False
        return True

    def _json(self, payload: Any, *, body: bool) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _files(folder: Path) -> Iterator[tuple[str, int]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path.relative_to(folder).as_posix(), path.stat().st_size


def _tree(folder: Path, under: str, recursive: bool) -> list[dict[str, Any]]:
    base = folder / under if under else folder
    entries: list[dict[str, Any]] = []
    for path in sorted(base.rglob("*") if recursive else base.iterdir()):
        name = path.relative_to(folder).as_posix()
        if path.is_dir():
            entries.append({"type": "directory", "oid": hashlib.sha1(name.encode()).hexdigest(), "size": 0,
                            "path": name})
        else:
            data = path.read_bytes()
            entry = {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": name}
            if path.suffix in (".safetensors", ".bin", ".gguf"):  # stored with LFS on the hub
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
    return entries
