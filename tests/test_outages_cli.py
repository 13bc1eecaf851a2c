"""Every `mmq` command with Redis, S3 or the gateway down: one line on stderr naming what cannot be
reached and where, and exit code 5 (EXIT_UNAVAILABLE); never a traceback.

Real: a redis-server, SeaweedFS, and gateway processes whose Redis or S3 is down. "Down" is a port
where nothing listens. The commands run in-process (`mmq.clients.cli.main`, stderr captured). The
commands come from the parser: a new one fails `test_every_command_is_classified` until it is
listed here with what it needs.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mmq.clients.cli import EXIT_UNAVAILABLE, _parser, main
from mmq.clients.direct import DirectTransport
from mmq.clients.keys import KeyStore
from mmq.clients.servers import free_port, start_redis, stop
from mmq.tasks.records import JobStatus
from mmq.tasks.processes import die_with_parent
from tests.conftest import ROOT, Stack, base_env, launch_gateway

JOB = "0123456789abcdef0123456789abcdef"  # a job id of the right form; replaced by a real one where needed
IMAGE = str(ROOT / "samples" / "house.png")
# Each client command, and the services it needs working directly against Redis and S3.
COMMANDS: dict[str, tuple[list[str], set[str]]] = {
    "run": (["run", "caption", f"image=@{IMAGE}"], {"redis", "storage"}),
    "ask": (["ask", "describe this", f"image=@{IMAGE}"], {"redis", "storage"}),
    "jobs get": (["jobs", "get", JOB], {"redis"}),
    "jobs wait": (["jobs", "wait", JOB, "--quiet"], {"redis"}),
    "jobs cancel": (["jobs", "cancel", JOB], {"redis"}),
    "jobs list": (["jobs", "list"], {"redis"}),
    "jobs download": (["jobs", "download", JOB, "--out", "{tmp}/out"], {"redis", "storage"}),
    "keys create": (["keys", "create", "--tenant", "acme"], {"redis"}),
    "keys list": (["keys", "list"], {"redis"}),
    "keys revoke": (["keys", "revoke", "0a1b2c3d4e5f"], {"redis"}),
    "status": (["status"], {"redis"}),
    "ready": (["ready", "caption"], {"redis"}),
    "pipelines": (["pipelines"], set()),
}
# Those that go through the gateway when MMQ_GATEWAY_URL is set (the SDK's commands); the rest are
# operators' commands, always direct.
THROUGH_GATEWAY = frozenset({"run", "ask", "jobs get", "jobs wait", "jobs cancel", "jobs list", "jobs download",
                             "pipelines"})
# Commands that are servers: they ride out an outage instead of exiting.
SERVERS = {
    "gateway": "its routes answer 503 (test_outages_gateway.py)",
    "metrics": "its /metrics answers 503 (test_the_metrics_exporter_answers_503_while_redis_is_down)",
    "webhooks": "its outbox keeps the events; it polls again",
    "worker": "Celery reconnects to the broker until it is back",
}
# Commands that use none of Redis, S3 and the gateway of the settings.
LOCAL = {
    "up": "starts its own Redis and S3", "down": "stops what up started", "demo": "up, one job, down",
    "plan": "GPUs and model sizes", "models pull": "the model hub", "models list": "the disk",
}
UNREACHABLE = {"redis": "Redis unreachable at", "storage": "artifact store unreachable at",
               "gateway": "gateway unreachable at"}


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[str]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        return [" ".join(prefix)]
    return [leaf for name, child in subparsers[0].choices.items()
            for leaf in leaf_commands(child, (*prefix, name))]


def argv(command: str, tmp_path, job_id: str = JOB) -> list[str]:
    return [arg.replace(JOB, job_id).replace("{tmp}", str(tmp_path)) for arg in COMMANDS[command][0]]


def needing(service: str, among: frozenset[str] = frozenset(COMMANDS)) -> list[str]:
    return sorted(c for c in among if service in COMMANDS[c][1])


@pytest.fixture
def environ(monkeypatch):
    """Make `env` mmq's whole environment in this process (what the command's settings read)."""

    def apply(env: dict[str, str]) -> None:
        for name in [n for n in os.environ if n.startswith(("MMQ_", "AWS_"))]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return apply


def the_one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mmq: ") and "Traceback" not in err, err
    return lines[0]


def test_every_command_is_classified():
    commands = leaf_commands(_parser())
    assert sorted(commands) == sorted([*COMMANDS, *SERVERS, *LOCAL])
    assert THROUGH_GATEWAY <= set(COMMANDS)


def test_the_exit_codes_are_in_the_help():
    text = _parser().format_help()
    assert f"{EXIT_UNAVAILABLE}  unavailable: Redis, the artifact store (S3) or the gateway" in text


@pytest.mark.parametrize("command", needing("redis"))
def test_with_redis_down(command, s3_server, environ, tmp_path, capsys):
    port = free_port()
    environ(base_env(tmp_path, port, s3_server.port))
    assert main(argv(command, tmp_path)) == EXIT_UNAVAILABLE
    line = the_one_line(capsys)
    assert "Redis unreachable" in line and f"127.0.0.1:{port}" in line, line


@pytest.fixture
def finished_job(make_stack):
    """A private Redis with a succeeded job whose output is a file in S3, as a worker leaves it."""
    own = make_stack()
    client = own.client()
    job = client.submit("caption", image=IMAGE)  # the image goes to S3; no worker takes this job
    client.transport.jobs.finish(job.id, JobStatus.SUCCEEDED, outputs={"image": job.record().inputs["image"]})
    client.close()
    return own, job.id


@pytest.mark.parametrize("command", needing("storage"))
def test_with_s3_down(command, finished_job, environ, tmp_path, capsys):
    own, job_id = finished_job
    port = free_port()
    environ({**own.env, "MMQ_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
    assert main(argv(command, tmp_path, job_id)) == EXIT_UNAVAILABLE
    assert f"{UNREACHABLE['storage']} http://127.0.0.1:{port}" in the_one_line(capsys)


def test_a_command_that_needs_no_service_works_while_all_are_down(environ, tmp_path, capsys):
    environ(base_env(tmp_path, free_port(), free_port()))
    assert main(["pipelines"]) == 0
    assert "caption" in capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(THROUGH_GATEWAY))
def test_with_the_gateway_down(command, environ, tmp_path, capsys):
    port = free_port()
    environ({"MMQ_GATEWAY_URL": f"http://127.0.0.1:{port}", "MMQ_API_KEY": "mmq_0a1b2c3d4e5f_x",
             "MMQ_DATA_DIR": str(tmp_path)})
    assert main(argv(command, tmp_path)) == EXIT_UNAVAILABLE
    assert f"{UNREACHABLE['gateway']} http://127.0.0.1:{port}" in the_one_line(capsys)


@pytest.fixture(scope="module")
def gateways(s3_server, model_cache, tmp_path_factory):
    """Two gateway processes over a private Redis: one whose Redis is down, one whose S3 is down;
    a key of tenant acme, and a succeeded job of acme with a file output."""
    tmp = tmp_path_factory.mktemp("outage-gateways")
    redis = start_redis(tmp / "redis", persistent=False, tied=True)
    up = Stack(redis=redis, s3=s3_server, env=base_env(model_cache, redis.port, s3_server.port))
    dead = {"redis": free_port(), "storage": free_port()}
    running = {
        "redis": launch_gateway(up, tmp, MMQ_BROKER_URL=f"redis://127.0.0.1:{dead['redis']}/0",
                                MMQ_RESULT_BACKEND=f"redis://127.0.0.1:{dead['redis']}/0"),
        "storage": launch_gateway(up, tmp, MMQ_S3_ENDPOINT_URL=f"http://127.0.0.1:{dead['storage']}"),
    }
    key = KeyStore(up.redis_client()).create("acme")[1]
    direct = DirectTransport(up.settings)
    job_id = direct.submit("caption", {"image": Path(IMAGE).read_bytes()}, owner="acme")
    direct.jobs.finish(job_id, JobStatus.SUCCEEDED, outputs={"image": direct.record(job_id).inputs["image"]})
    direct.close()
    yield running, dead, key, job_id
    for gateway in running.values():
        stop(gateway.process.pid, timeout_s=20)
    stop(redis.pid)


@pytest.mark.parametrize(("command", "service"), [(c, s) for s in ("redis", "storage")
                                                  for c in needing(s, THROUGH_GATEWAY)])
def test_through_the_gateway_with_redis_or_s3_down_behind_it(command, service, gateways, environ, tmp_path,
                                                             capsys):
    running, dead, key, job_id = gateways
    environ({"MMQ_GATEWAY_URL": running[service].url, "MMQ_API_KEY": key, "MMQ_DATA_DIR": str(tmp_path)})
    assert main(argv(command, tmp_path, job_id)) == EXIT_UNAVAILABLE
    line = the_one_line(capsys)
    assert UNREACHABLE[service] in line and f"127.0.0.1:{dead[service]}" in line, line


def test_the_metrics_exporter_answers_503_while_redis_is_down(tmp_path):
    port, redis_port = free_port(), free_port()
    env = base_env(tmp_path, redis_port, free_port())
    with open(tmp_path / "metrics.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "mmq.clients.cli", "metrics", "--host", "127.0.0.1",
                                    "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=die_with_parent)
    try:
        response = _first_answer(f"http://127.0.0.1:{port}/metrics", process)
        assert response.status_code == 503
        assert response.text.count("\n") == 1
        assert f"Redis unreachable at 127.0.0.1:{redis_port}" in response.text
    finally:
        stop(process.pid)
    assert "Traceback" not in (tmp_path / "metrics.log").read_text()


def _first_answer(url: str, process: subprocess.Popen) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        try:
            return httpx.get(url, timeout=10)
        except httpx.ConnectError:
            assert process.poll() is None and time.monotonic() < deadline, "mmq metrics did not start"
            time.sleep(0.1)
