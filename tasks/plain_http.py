"""The artifact store's own requests (one signed URL, a GET or a PUT, the whole body in memory)
over connections kept alive between them.

Plain `http.client`, not urllib3's pool manager: the same GET of a small object costs about
0.6 ms less with it on this kind of machine when the connection has sat idle for a few tens of
milliseconds (urllib3 3.9-4.5 ms, here 3.3-3.8 ms, against SeaweedFS, six runs; the wire is the
same, one send and one receive), which is every input of every step (docs/benchmarks.md, B1). Nothing here retries a request that
reached the server and was answered: a connection found closed by the server before it answered
(its keep-alive ran out) is replaced once; every other failure is the caller's to handle.
"""

from __future__ import annotations

import http.client
import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

_Origin = tuple[str, str, int]  # scheme, host, port
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Raised by a kept-alive connection that the server closed while it sat idle, before any answer.
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, http.client.RemoteDisconnected)


@dataclass(frozen=True)
class PlainResponse:
    status: int
    data: bytes


class KeepAlive:
    """Idle connections by origin, at most `keep` of each, shared by every thread (a thread
    takes one for the length of a request)."""

    def __init__(self, *, connect_timeout_s: float = 5.0, read_timeout_s: float = 60.0, keep: int = 16) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keep = keep
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self._pid = os.getpid()

    def request(self, method: str, url: str, *, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> PlainResponse:
        """One request and its whole answer, whatever its status."""
        split = urlsplit(url)
        if split.scheme not in _DEFAULT_PORTS or not split.hostname:
            raise ValueError(f"not an http(s) URL: {url[:80]!r}")
        origin = (split.scheme, split.hostname, split.port or _DEFAULT_PORTS[split.scheme])
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        connection, reused = self._take(origin)
        while True:
            try:
                connection.request(method, target, body=body, headers=dict(headers or {}))
                response = connection.getresponse()
                data = response.read()
            except _STALE:
                connection.close()
                if not reused:
                    raise
                connection, reused = self._connect(origin), False  # once, on a fresh connection
                continue
            except BaseException:
                connection.close()
                raise
            if response.will_close:
                connection.close()
            else:
                self._give_back(origin, connection)
            return PlainResponse(response.status, data)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def _take(self, origin: _Origin) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: its parent's sockets are not its own to use
                self._idle, self._pid = {}, os.getpid()
            idle = self._idle.get(origin)
            if idle:
                return idle.pop(), True
        return self._connect(origin), False

    def _give_back(self, origin: _Origin, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self.keep:
                idle.append(connection)
                return
        connection.close()

    def _connect(self, origin: _Origin) -> http.client.HTTPConnection:
        scheme, host, port = origin
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()  # the system's CAs, as urllib3 would use
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=self.connect_timeout_s, context=self._tls)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=self.connect_timeout_s)
        try:
            connection.connect()
        except BaseException:
            connection.close()
            raise
        connection.sock.settimeout(self.read_timeout_s)  # connecting is quick or hopeless; answers may take long
        return connection
