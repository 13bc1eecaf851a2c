"""docker-compose.yml validates (no Docker engine runs here: `docker-compose config` needs none)."""

import shutil
import subprocess
from pathlib import Path

import yaml

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


def rendered() -> dict:
    assert shutil.which("docker-compose"), "docker-compose (Debian package) is needed: make system-deps"
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "config"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_the_compose_file_is_valid_and_has_the_whole_stack():
    services = rendered()["services"]
    assert {"redis", "s3", "flower", "caption", "diffusion"} <= services.keys()
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]


def test_each_specialisation_has_its_own_gpu_worker_on_its_queue():
    services = rendered()["services"]
    for name in ("caption", "diffusion"):
        service = services[name]
        assert service["command"][:2] == ["worker", name]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"] and devices[0]["count"] == 1
        assert service["environment"]["MMQ_BROKER_URL"] == "redis://redis:6379/0"


def test_flower_asks_for_credentials():
    flower = rendered()["services"]["flower"]
    assert "flower" in flower["entrypoint"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"]
