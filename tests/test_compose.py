"""docker-compose.yml validates (no Docker engine runs here: `docker-compose config` needs none)."""

import shutil
import subprocess
from pathlib import Path

import yaml

from mmq.tasks import SPECIALISATIONS

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
CPU_ONLY = {"media"}  # no model: PyAV on the CPU


def rendered() -> dict:
    assert shutil.which("docker-compose"), "docker-compose (Debian package) is needed: make system-deps"
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "config"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_the_compose_file_is_valid_and_has_the_whole_stack():
    services = rendered()["services"]
    assert {"redis", "s3", "flower", *SPECIALISATIONS} <= services.keys()
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]


def test_each_specialisation_has_its_own_worker_on_its_queue_with_a_gpu():
    services = rendered()["services"]
    for name in SPECIALISATIONS:
        service = services[name]
        assert service["command"][:2] == ["worker", name]
        assert service["environment"]["MMQ_BROKER_URL"] == "redis://redis:6379/0"
        if name in CPU_ONLY:
            assert "deploy" not in service
            continue
        assert service["command"][2:] == ["--gpus", "0"]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"] and devices[0]["count"] == 1
        assert service["environment"][SPECIALISATIONS[name].model_env_var] == SPECIALISATIONS[name].default_model


def test_the_gateway_serves_on_all_interfaces_with_public_presigned_urls():
    gateway = rendered()["services"]["gateway"]
    assert gateway["command"] == ["gateway", "--host", "0.0.0.0", "--port", "8600"]
    assert gateway["environment"]["MMQ_S3_PUBLIC_URL"] and gateway["environment"]["MMQ_BROKER_URL"]


def test_workers_have_a_readiness_healthcheck_and_time_to_finish_their_step():
    services = rendered()["services"]
    for name in SPECIALISATIONS:
        service = services[name]
        assert service["healthcheck"]["test"] == ["CMD", "mmq", "ready", name]
        grace_s = _seconds(service["stop_grace_period"])
        assert float(service["environment"]["MMQ_SHUTDOWN_TIMEOUT_S"]) < grace_s


def _seconds(duration: str) -> float:
    """`10m0s`, `90s`, `1h`: docker-compose's durations, in seconds."""
    import re

    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(amount) * units[unit] for amount, unit in re.findall(r"([0-9.]+)([hms])", duration))


def test_the_s3_store_requires_the_same_credentials_as_mmq():
    services = rendered()["services"]
    s3_env, worker_env = services["s3"]["environment"], services["caption"]["environment"]
    assert s3_env["AWS_ACCESS_KEY_ID"] == worker_env["AWS_ACCESS_KEY_ID"]
    assert s3_env["AWS_SECRET_ACCESS_KEY"] == worker_env["AWS_SECRET_ACCESS_KEY"]


def test_flower_asks_for_credentials():
    flower = rendered()["services"]["flower"]
    assert "flower" in flower["entrypoint"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"]
