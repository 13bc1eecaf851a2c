"""docker-compose.yml and the Dockerfile, checked without a Docker engine (none runs here).

The compose file is rendered by docker-compose itself (`docker-compose config`: interpolation,
anchors and merge keys resolved, the schema checked); the assertions read that rendering. Which
services a profile starts follows compose's rule, which `config` of docker-compose 1.29 does not
apply: a service starts when it has no profile or one of the named ones. The Dockerfile is read as
text: no image can be built or pulled here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mmq.tasks import SPECIALISATIONS, Settings
from mmq.tasks.specialisation_specs import FASTER_WHISPER_DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CPU_ONLY = {"media"}  # no model: PyAV on the CPU
GPU_WORKERS = [name for name in SPECIALISATIONS if name not in CPU_ONLY]
INFRASTRUCTURE = {"redis", "s3", "flower", "gateway"}


def rendered(*profiles: str, **variables: str) -> dict:
    """`docker-compose config` with only `variables` set (none of this shell's MMQ_* leak in)."""
    assert shutil.which("docker-compose"), "docker-compose (Debian package) is needed: make system-deps"
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **variables}
    options = [arg for profile in profiles for arg in ("--profile", profile)]
    result = subprocess.run(["docker-compose", *options, "-f", str(COMPOSE_FILE), "config"],
                            check=False, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def started(config: dict, *profiles: str) -> dict:
    """The services that `docker compose [--profile P ...] up` starts."""
    return {name: service for name, service in config["services"].items()
            if not service.get("profiles") or set(service["profiles"]) & set(profiles)}


def container_env(service: dict) -> dict[str, str]:
    """The environment the container gets: a variable without a value is not set at all."""
    return {key: str(value) for key, value in service["environment"].items() if value is not None}


def gpu_of(service: dict) -> list[str]:
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "count" not in device  # count: 1 is the first GPU, for every service alike
    return device["device_ids"]


# The profiles

@pytest.mark.parametrize("profile", [None, "gpu", "cpu"])
def test_each_profile_renders_and_starts_only_services_whose_dependencies_it_starts(profile):
    profiles = (profile,) if profile else ()
    services = started(rendered(*profiles), *profiles)
    assert INFRASTRUCTURE <= services.keys()
    for name, service in services.items():
        # compose refuses to start a service that depends on one outside the active profiles
        assert set(service.get("depends_on", {})) <= services.keys(), name


def test_without_a_profile_no_worker_starts():
    assert started(rendered()).keys() == INFRASTRUCTURE


def test_redis_keeps_an_append_only_file():
    redis = rendered()["services"]["redis"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"


# The GPU profile

def test_the_gpu_profile_has_one_worker_per_specialisation_on_its_queue():
    services = started(rendered("gpu"), "gpu")
    assert set(SPECIALISATIONS) | {"models"} | INFRASTRUCTURE == services.keys()
    for name in SPECIALISATIONS:
        assert services[name]["command"][:2] == ["worker", name]
        assert services[name]["environment"]["MMQ_BROKER_URL"] == "redis://redis:6379/0"
    assert "deploy" not in services["media"] and services["media"]["command"] == ["worker", "media"]


def test_each_gpu_worker_reserves_the_gpu_its_own_variable_names():
    # given a different GPU for each specialisation (an index or a UUID, as Docker accepts)
    chosen = {name: str(i + 1) for i, name in enumerate(GPU_WORKERS)}
    chosen["vqa"] = "GPU-5f3c2a8e-0000-4000-8000-000000000001"
    # when the file is rendered with them
    services = rendered("gpu", **{f"MMQ_{name.upper()}_GPU": gpu for name, gpu in chosen.items()})["services"]
    # then each worker reserves its own, and only it
    for name, gpu in chosen.items():
        assert gpu_of(services[name]) == [gpu], name


def test_by_default_every_gpu_worker_reserves_gpu_0():
    services = rendered("gpu")["services"]
    assert {name: gpu_of(services[name]) for name in GPU_WORKERS} == {name: ["0"] for name in GPU_WORKERS}


def test_inside_its_container_a_gpu_worker_pins_the_one_gpu_it_sees_and_requires_it():
    # The reserved GPU is the container's only one, CUDA's index 0 whatever its host index:
    # `--gpus 0` sets CUDA_VISIBLE_DEVICES=0; `--gpus 3` would hide it.
    services = rendered("gpu", MMQ_DIFFUSION_GPU="3")["services"]
    for name in GPU_WORKERS:
        assert services[name]["command"] == ["worker", name, "--gpus", "0"], name
        assert services[name]["environment"]["MMQ_DEVICE"] == "cuda", name


def test_gpu_workers_load_the_default_checkpoints():
    services = rendered("gpu")["services"]
    for name in GPU_WORKERS:
        settings = Settings.from_env(container_env(services[name]))
        assert settings.models[name] == SPECIALISATIONS[name].default_model, name


def test_gpu_workers_start_after_the_models_service_has_pulled_their_checkpoints():
    services = rendered("gpu")["services"]
    models = services["models"]
    assert models["command"] == ["models", "pull"] and models["profiles"] == ["gpu"]
    assert "restart" not in models  # one-off: it runs to completion once
    for name in GPU_WORKERS:
        assert services[name]["depends_on"]["models"] == {"condition": "service_completed_successfully"}, name
        assert services[name]["volumes"] == models["volumes"], name


@pytest.mark.parametrize("backend", ["transformers", "faster-whisper"])
def test_the_models_service_pulls_exactly_what_the_workers_load(backend):
    services = rendered("gpu", MMQ_SPEECH_BACKEND=backend, MMQ_VQA_MODEL="llava-hf/llava-1.5-13b-hf")["services"]
    pulled = Settings.from_env(container_env(services["models"]))
    for name in GPU_WORKERS:
        worker = Settings.from_env(container_env(services[name]))
        assert (worker.models, worker.clip_sound_model) == (pulled.models, pulled.clip_sound_model), name
    assert pulled.clip_sound_model == "laion/clap-htsat-unfused"  # the clip worker's CLAP is pulled too
    assert pulled.models["vqa"] == "llava-hf/llava-1.5-13b-hf"
    expected_speech = FASTER_WHISPER_DEFAULT_MODEL if backend == "faster-whisper" else "openai/whisper-small"
    assert pulled.models["speech"] == expected_speech


# The CPU profile

def test_the_cpu_profile_runs_tiny_models_on_the_cpu_without_a_gpu_or_a_pull():
    services = started(rendered("cpu"), "cpu")
    workers = {f"{name}-cpu": name for name in GPU_WORKERS}
    assert services.keys() == INFRASTRUCTURE | {"media"} | workers.keys()
    for service_name, name in workers.items():
        service = services[service_name]
        assert service["command"] == ["worker", name], service_name
        assert "deploy" not in service and "models" not in service.get("depends_on", {}), service_name
        env = container_env(service)
        assert env["MMQ_DEVICE"] == "cpu" and Settings.from_env(env).models[name] == "tiny", service_name
        assert Settings.from_env(env).clip_sound_model == "tiny", service_name


# Every worker

def test_workers_have_a_readiness_healthcheck_and_time_to_finish_their_step():
    services = rendered()["services"]
    workers = {name: name for name in SPECIALISATIONS} | {f"{name}-cpu": name for name in GPU_WORKERS}
    for service_name, name in workers.items():
        service = services[service_name]
        assert service["healthcheck"]["test"] == ["CMD", "mmq", "ready", name], service_name
        grace_s = _seconds(service["stop_grace_period"])
        assert float(service["environment"]["MMQ_SHUTDOWN_TIMEOUT_S"]) < grace_s
        assert service["restart"] == "unless-stopped"  # a failed load exits 4: restarted, with backoff
        assert service["shm_size"]


def _seconds(duration: str) -> float:
    """`10m0s`, `90s`, `1h`: docker-compose's durations, in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(amount) * units[unit] for amount, unit in re.findall(r"([0-9.]+)([hms])", duration))


# The other services

def test_the_gateway_serves_on_all_interfaces_with_public_presigned_urls():
    gateway = rendered()["services"]["gateway"]
    assert gateway["command"] == ["gateway", "--host", "0.0.0.0", "--port", "8600"]
    assert gateway["environment"]["MMQ_S3_PUBLIC_URL"] and gateway["environment"]["MMQ_BROKER_URL"]


def test_the_s3_store_requires_the_same_credentials_as_mmq():
    services = rendered()["services"]
    s3_env = services["s3"]["environment"]
    for worker in ("caption", "caption-cpu", "gateway"):
        assert s3_env["AWS_ACCESS_KEY_ID"] == services[worker]["environment"]["AWS_ACCESS_KEY_ID"]
        assert s3_env["AWS_SECRET_ACCESS_KEY"] == services[worker]["environment"]["AWS_SECRET_ACCESS_KEY"]


def test_flower_asks_for_credentials():
    flower = rendered()["services"]["flower"]
    assert "flower" in flower["entrypoint"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"]


# The image

def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in joined.splitlines() if line.strip()]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in dockerfile():
        if instruction == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


def commands() -> list[list[str]]:
    """Every command of every RUN (split at &&), $VARIABLES expanded from the ENV lines."""
    env = image_env()
    def expand(word: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), word)

    return [[expand(word) for word in shlex.split(command)]
            for instruction, args in dockerfile() if instruction == "RUN" for command in args.split("&&")]


def test_the_image_runs_as_a_user_that_owns_the_model_cache_and_the_data_folder():
    # the runtime user, by number
    users = [args for instruction, args in dockerfile() if instruction == "USER"]
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and uid != "0"
    useradd = next(c for c in commands() if c[0] == "useradd" and c[c.index("--uid") + 1] == uid)
    name = useradd[-1]
    # the folders it owns
    owned: dict[str, str] = {}
    for command in commands():
        if command[0] == "install" and "-d" in command:
            owner = command[command.index("-o") + 1]
            owned.update((path, owner) for path in command[1:] if path.startswith("/"))
    env = image_env()
    assert owned[env["HF_HOME"]] in (name, uid)
    assert owned[env["MMQ_DATA_DIR"]] in (name, uid)


def test_the_models_volume_is_mounted_on_the_images_hf_home():
    env, services = image_env(), rendered("gpu")["services"]
    for name in ("models", *GPU_WORKERS):
        assert any(volume.split(":")[:2] == ["models", env["HF_HOME"]] for volume in services[name]["volumes"])
        assert services[name]["environment"]["MMQ_DATA_DIR"] == env["MMQ_DATA_DIR"]


def test_the_image_installs_cuda_12_cublas_where_faster_whisper_finds_it():
    python = re.match(r"python:(\d+\.\d+)", dict(dockerfile())["FROM"]).group(1)
    library_path = image_env()["LD_LIBRARY_PATH"].split(":")
    assert f"/usr/local/lib/python{python}/site-packages/nvidia/cublas/lib" in library_path
    pip = next(c for c in commands() if c[:2] == ["pip", "install"])
    assert "nvidia-cublas-cu12" in pip
    # CTranslate2 from 4.6.3 loads no cuDNN; a cu12 cuDNN would overwrite torch's (same folder)
    assert "ctranslate2>=4.6.3" in pip and not any(word.startswith("nvidia-cudnn") for word in pip)
    # the build fails if the loader cannot find it
    assert ["python", "-c", "import ctypes; ctypes.CDLL('libcublas.so.12')"] in commands()


def test_the_build_context_holds_what_the_image_copies():
    kept = {line[1:].strip() for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    assert "*" in DOCKERIGNORE.read_text().splitlines()  # .venv and .git stay out
    copied = {source for instruction, args in dockerfile() if instruction == "COPY" for source in args.split()[:-1]}
    assert copied <= kept
