"""Real Redis deployments for the production-Redis tests: a TLS-only server with its own CA, and a
Sentinel group (a primary, a replica, three sentinels). Each server is a `redis-server` process
on free ports, tied to the test run, and stopped by pid.

Certificates come from the `openssl` binary (no Python crypto package is needed): EC keys, made
in milliseconds.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis as redis_lib

from mmq.clients.servers import free_port, redis_binary, stop
from mmq.tasks.processes import die_with_parent

START_TIMEOUT_S = 30.0
MASTER_NAME = "mymaster"


@dataclass(frozen=True)
class Certificates:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost (PEM files)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_certificates(folder: Path, *, name: str = "mmq test CA") -> Certificates:
    """A fresh CA and a server certificate signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, csr, crt = folder / "server.key", folder / "server.csr", folder / "server.crt"
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", ca_key, "-out", ca_crt, "-days", "2", "-subj", f"/CN={name}")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    _openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
             "-days", "2", "-extfile", folder / "san.cnf")
    return Certificates(ca_file=ca_crt, cert_file=crt, key_file=key)


def _openssl(*args: object) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@dataclass
class RedisProcess:
    """One redis-server (or sentinel) process."""

    pid: int
    port: int
    process: subprocess.Popen

    def kill(self) -> None:
        """SIGKILL: no goodbye, no save."""
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            stop(self.pid, timeout_s=10)
            self.process.wait(timeout=10)


def start_server(folder: Path, name: str, *args: str, port: int | None = None) -> RedisProcess:
    """`redis-server` with `args`, in its own folder, logging to `<folder>/<name>.log`."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    with open(folder / f"{name}.log", "ab") as log:
        process = subprocess.Popen([redis_binary(), *args], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)
    return RedisProcess(process.pid, port, process)


def start_tls_redis(folder: Path, certificates: Certificates) -> RedisProcess:
    """A Redis that speaks TLS only (`--port 0`); clients need not present a certificate."""
    port = free_port()
    server = start_server(folder, "redis-tls", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                          "--tls-cert-file", str(certificates.cert_file), "--tls-key-file",
                          str(certificates.key_file), "--tls-ca-cert-file", str(certificates.ca_file),
                          "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", port=port)
    _wait_for_port(server, folder / "redis-tls.log")
    return server


@dataclass
class SentinelGroup:
    """A primary, its replica and three sentinels watching them as `MASTER_NAME` (quorum 2)."""

    primary: RedisProcess
    replica: RedisProcess
    sentinels: list[RedisProcess]
    folder: Path
    password: str | None = None  # of the primary and the replica (the sentinels ask none)

    @property
    def url(self) -> str:
        """Celery's Sentinel URL form: every sentinel; the database and password on the first."""
        secret = f":{self.password}@" if self.password else ""
        return ";".join(f"sentinel://{secret if i == 0 else ''}127.0.0.1:{s.port}" + ("/0" if i == 0 else "")
                        for i, s in enumerate(self.sentinels))

    def node(self, server: RedisProcess) -> redis_lib.Redis:
        """A plain client of the primary or the replica, by address (not through the sentinels)."""
        return redis_lib.Redis(port=server.port, password=self.password, socket_timeout=5)

    def cut_replica_link(self) -> None:
        """Break the replication link for good while both servers stay up: the replica can no longer
        authenticate to the primary, and the primary drops its connection. The sentinels still count
        the replica as promotable (for ten times down-after-milliseconds)."""
        self.node(self.replica).config_set("masterauth", "not-the-password")
        self.node(self.primary).execute_command("CLIENT", "KILL", "TYPE", "replica")

    def master_port(self) -> int | None:
        """The port of the primary the first sentinel that answers names now."""
        for sentinel in self.sentinels:
            try:
                client = redis_lib.Redis(port=sentinel.port, socket_timeout=2)
                host_port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis_lib.RedisError:
                continue
            if host_port:
                return int(host_port[1])
        return None

    def wait_for_replica_promoted(self, timeout_s: float = 60.0) -> float:
        """Until the sentinels name the replica as primary and it takes writes; the seconds it took."""
        started = time.monotonic()
        client = self.node(self.replica)
        while time.monotonic() - started < timeout_s:
            if self.master_port() == self.replica.port and client.info("replication")["role"] == "master":
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"the sentinels did not promote the replica within {timeout_s} s; "
                             f"see the logs in {self.folder}")

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            server.stop()


def start_sentinel_group(folder: Path, *, password: str | None = None, down_after_ms: int = 1000,
                         failover_timeout_ms: int = 5000) -> SentinelGroup:
    """Primary and replica (no persistence: a killed primary is gone), then three sentinels, each
    with its own config file (Sentinel rewrites it); returns once the sentinels see the replica."""
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if password:
        common += ["--requirepass", password, "--masterauth", password]
    primary_port = free_port()
    primary = start_server(folder / "primary", "redis", "--port", str(primary_port), *common, port=primary_port)
    _wait_for_port(primary, folder / "primary" / "redis.log")
    replica_port = free_port()
    replica = start_server(folder / "replica", "redis", "--port", str(replica_port), *common,
                           "--replicaof", "127.0.0.1", str(primary_port), port=replica_port)
    _wait_for_port(replica, folder / "replica" / "redis.log")
    sentinels = []
    for number in range(3):
        port = free_port()
        sentinel_dir = folder / f"sentinel-{number}"
        sentinel_dir.mkdir(parents=True, exist_ok=True)
        conf = sentinel_dir / "sentinel.conf"
        conf.write_text("\n".join([
            f"port {port}", "bind 127.0.0.1", f"dir {sentinel_dir}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}",
            f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
            *([f"sentinel auth-pass {MASTER_NAME} {password}"] if password else []), ""]))
        sentinel = start_server(sentinel_dir, "sentinel", str(conf), "--sentinel", port=port)
        _wait_for_port(sentinel, sentinel_dir / "sentinel.log")
        sentinels.append(sentinel)
    group = SentinelGroup(primary, replica, sentinels, folder, password)
    _wait_until_watched(group)
    return group


def _wait_until_watched(group: SentinelGroup) -> None:
    """Until the replica is in sync and every sentinel knows it and the two other sentinels (only
    then can they agree on a failover and pick the replica)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    primary = group.node(group.primary)
    while time.monotonic() < deadline:
        online = [v for k, v in primary.info("replication").items()
                  if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"]
        states = [redis_lib.Redis(port=s.port, socket_timeout=2).sentinel_master(MASTER_NAME) for s in group.sentinels]
        if online and all(s["num-slaves"] >= 1 and s["num-other-sentinels"] >= 2 for s in states):
            return
        time.sleep(0.1)
    raise AssertionError(f"the sentinel group did not come together; see the logs in {group.folder}")


def _wait_for_port(server: RedisProcess, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"redis-server exited at start:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"redis-server did not listen on {server.port}:\n{log.read_text(errors='replace')[-2000:]}")
