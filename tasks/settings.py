"""Settings: one object, read from the environment when a process starts, never at import time.

`mmq up` records the embedded stack's connection settings in `<data dir>/stack.json`; a process
started in that folder picks them up, with its own environment variables taking precedence.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .redis_connection import RedisConnection, TLSFiles, check_master_name, check_tls_files
from .specialisation_specs import (
    CLAP_DEFAULT_MODEL,
    FASTER_WHISPER_DEFAULT_MODEL,
    SPECIALISATIONS,
    SPEECH_BACKENDS,
)

STACK_FILE = "stack.json"
TINY = "tiny"
WEEK_S = 7 * 24 * 3600


@dataclass(frozen=True)
class TimeLimits:
    """Celery's soft limit raises inside the task; the hard limit kills the process."""

    soft_s: int
    hard_s: int


@dataclass(frozen=True)
class Serving:
    """How a worker serves its specialisation: dynamic batching and the models it may load."""

    max_batch: int = 1  # jobs sharing one forward pass; 1 turns batching off
    max_wait_ms: int = 10  # how long the first job of a batch waits for company
    models: tuple[str, ...] = ()  # model ids a job may name, beside the default (MMQ_<NAME>_MODELS)
    max_loaded: int = 1  # models kept loaded at once; the least recently used goes first
    # Processes that prepare a batching worker's inputs beside the model's (decode, process: see
    # mmq.workers.prepare_processes), for specialisations that offer it; 0: in the worker's threads.
    prepare_processes: int = 2
    # How many steps of niceness below the model's thread a batching worker runs the work that
    # feeds it (its steps' threads, its prepare processes: mmq.workers.cpu_priority); 0: the same.
    prepare_nice: int = 10


@dataclass(frozen=True)
class Settings:
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str = "redis://127.0.0.1:6379/0"
    # Beside a sentinel:// URL, the master's name; beside a rediss:// one, the TLS files (see `redis`).
    redis_sentinel_master: str | None = None
    redis_tls: TLSFiles = field(default_factory=TLSFiles)
    s3_endpoint_url: str | None = None
    s3_bucket: str = "mmq-artifacts"
    s3_region: str = "us-east-1"
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    data_dir: Path = Path(".mmq")
    pipelines_dir: Path = Path("pipelines")  # YAML/JSON pipelines loaded beside the built-in ones
    models: Mapping[str, str] = field(default_factory=dict)
    time_limits: Mapping[str, TimeLimits] = field(default_factory=dict)
    serving: Mapping[str, Serving] = field(default_factory=dict)
    record_ttl_s: int = WEEK_S
    # How long a finished job's record (status, outputs, error, end event) stays readable.
    finished_ttl_s: int = WEEK_S
    presign_expiry_s: int = 3600
    max_deliveries: int = 3
    max_image_pixels: int = 64_000_000
    max_audio_s: int = 4 * 3600
    # Embeddings with more numbers than this are stored as an .npy artifact instead of inline.
    inline_embedding_max: int = 8192
    speech_backend: str = "transformers"
    # The clip worker's CLAP (sounds and texts): a hub id, a folder, "tiny", or "none" (no sounds served).
    clip_sound_model: str = CLAP_DEFAULT_MODEL
    # Stable Diffusion: run the checkpoint's safety checker when it ships one (a flagged image is
    # withheld: the step fails with ContentFiltered); and the longest side image2image works at
    # (None: the checkpoint's own resolution, 512 for v1-5).
    diffusion_safety_checker: bool = True
    image2image_max_side: int | None = None
    # Must outlast the longest queue wait plus run time, or Redis re-delivers a running step.
    visibility_timeout_s: int = 4 * 3600
    # How often a worker sweeps for messages whose consumer died (unacked past the visibility timeout).
    restore_interval_s: int = 60
    # The HTTP gateway: where SDKs outside the cluster reach it, with which key.
    gateway_url: str | None = None
    api_key: str | None = None
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8600
    max_upload_bytes: int = 100 * 1024 * 1024  # one uploaded or fetched input file
    upload_expiry_s: float = 24 * 3600.0  # an upload that no job used is deleted this long after its URL was issued
    max_request_bytes: int = 1024 * 1024  # one JSON request body
    allow_private_urls: bool = False  # may URL inputs point at private addresses (the cluster's own)?
    s3_public_url: str | None = None  # the S3 endpoint in presigned URLs, when callers see another one
    # Signs the webhooks of jobs submitted inside the cluster (tenants have their own secrets).
    webhook_secret: str | None = None
    webhook_max_attempts: int = 6
    webhook_backoff_s: float = 2.0  # the first retry's delay; each further retry doubles it
    webhook_timeout_s: float = 10.0
    # On SIGTERM a worker lets its running step finish for this long, then requeues it.
    shutdown_timeout_s: float = 120.0
    flower_basic_auth: str | None = None  # user:password, for Flower

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from `environ` (default `os.environ`) over the stack file, if any."""
        env = dict(os.environ if environ is None else environ)
        data_dir = Path(env.get("MMQ_DATA_DIR", ".mmq")).expanduser()
        merged = {**_read_stack_env(data_dir), **env}
        return cls._from_mapping(merged, data_dir)

    @classmethod
    def _from_mapping(cls, env: Mapping[str, str], data_dir: Path) -> Settings:
        broker = env.get("MMQ_BROKER_URL", cls.broker_url)
        speech_backend = env.get("MMQ_SPEECH_BACKEND", cls.speech_backend)
        if speech_backend not in SPEECH_BACKENDS:
            raise ConfigurationError(
                f"MMQ_SPEECH_BACKEND must be one of {', '.join(SPEECH_BACKENDS)}, got {speech_backend!r}")
        models = {n: env.get(s.model_env_var, s.default_model) for n, s in SPECIALISATIONS.items()}
        if speech_backend == "faster-whisper":
            models["speech"] = env.get("MMQ_SPEECH_MODEL", FASTER_WHISPER_DEFAULT_MODEL)
        backend = env.get("MMQ_RESULT_BACKEND", broker)
        settings = cls(
            broker_url=broker,
            result_backend=backend,
            **_redis_options(env, broker, backend),
            s3_endpoint_url=env.get("MMQ_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL") or None,
            s3_bucket=env.get("MMQ_S3_BUCKET", cls.s3_bucket),
            s3_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or cls.s3_region,
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
            data_dir=data_dir,
            pipelines_dir=Path(env.get("MMQ_PIPELINES_DIR", "pipelines")).expanduser(),
            models=models,
            # A tiny CLIP gets a tiny CLAP beside it unless one is named: `--models tiny` stays tiny.
            clip_sound_model=env.get("MMQ_CLIP_SOUND_MODEL")
            or (TINY if models["clip"] == TINY else CLAP_DEFAULT_MODEL),
            time_limits={n: _time_limits(env, n) for n in SPECIALISATIONS},
            serving={n: _serving(env, n) for n in SPECIALISATIONS},
            record_ttl_s=_positive_int(env, "MMQ_RECORD_TTL_S", WEEK_S),
            finished_ttl_s=_positive_int(env, "MMQ_FINISHED_TTL_S", _positive_int(env, "MMQ_RECORD_TTL_S", WEEK_S)),
            presign_expiry_s=_positive_int(env, "MMQ_PRESIGN_EXPIRY_S", cls.presign_expiry_s),
            max_deliveries=_positive_int(env, "MMQ_MAX_DELIVERIES", cls.max_deliveries),
            max_image_pixels=_positive_int(env, "MMQ_MAX_IMAGE_PIXELS", cls.max_image_pixels),
            max_audio_s=_positive_int(env, "MMQ_MAX_AUDIO_S", cls.max_audio_s),
            inline_embedding_max=_positive_int(env, "MMQ_INLINE_EMBEDDING_MAX", cls.inline_embedding_max),
            speech_backend=speech_backend,
            diffusion_safety_checker=_flag(env, "MMQ_DIFFUSION_SAFETY_CHECKER", default=True),
            image2image_max_side=_positive_int(env, "MMQ_DIFFUSION_MAX_SIDE", 0) or None,
            visibility_timeout_s=_positive_int(
                env, "MMQ_VISIBILITY_TIMEOUT_S", cls.visibility_timeout_s
            ),
            restore_interval_s=_positive_int(env, "MMQ_RESTORE_INTERVAL_S", cls.restore_interval_s),
            gateway_url=(env.get("MMQ_GATEWAY_URL") or "").rstrip("/") or None,
            api_key=env.get("MMQ_API_KEY") or None,
            gateway_host=env.get("MMQ_GATEWAY_HOST", cls.gateway_host),
            gateway_port=_positive_int(env, "MMQ_GATEWAY_PORT", cls.gateway_port),
            max_upload_bytes=_positive_int(env, "MMQ_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            upload_expiry_s=_positive_number(env, "MMQ_UPLOAD_EXPIRY_S", cls.upload_expiry_s),
            max_request_bytes=_positive_int(env, "MMQ_MAX_REQUEST_BYTES", cls.max_request_bytes),
            allow_private_urls=_flag(env, "MMQ_ALLOW_PRIVATE_URLS"),
            s3_public_url=env.get("MMQ_S3_PUBLIC_URL") or None,
            webhook_secret=env.get("MMQ_WEBHOOK_SECRET") or None,
            webhook_max_attempts=_positive_int(env, "MMQ_WEBHOOK_MAX_ATTEMPTS", cls.webhook_max_attempts),
            webhook_backoff_s=_positive_number(env, "MMQ_WEBHOOK_BACKOFF_S", cls.webhook_backoff_s),
            webhook_timeout_s=_positive_number(env, "MMQ_WEBHOOK_TIMEOUT_S", cls.webhook_timeout_s),
            shutdown_timeout_s=_positive_number(env, "MMQ_SHUTDOWN_TIMEOUT_S", cls.shutdown_timeout_s),
            flower_basic_auth=env.get("MMQ_FLOWER_BASIC_AUTH") or None,
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings under which Celery would silently run a step twice at once."""
        longest = max((limits.hard_s for limits in self.time_limits.values()), default=0)
        if self.visibility_timeout_s <= longest:
            raise ConfigurationError(
                f"MMQ_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) must be longer than the "
                f"longest hard time limit ({longest} s), or Redis re-delivers running steps"
            )
        if self.image2image_max_side is not None and self.image2image_max_side < 64:
            raise ConfigurationError(f"MMQ_DIFFUSION_MAX_SIDE must be at least 64, got {self.image2image_max_side}")
        if len(self.s3_bucket) < 3 or len(self.s3_bucket) > 63:
            raise ConfigurationError(f"MMQ_S3_BUCKET must be 3-63 characters, got {self.s3_bucket!r}")

    def model_for(self, specialisation: str) -> str:
        return self.models.get(specialisation, SPECIALISATIONS[specialisation].default_model)

    def limits_for(self, specialisation: str) -> TimeLimits:
        return self.time_limits.get(specialisation) or _time_limits({}, specialisation)

    def serving_for(self, specialisation: str) -> Serving:
        return self.serving.get(specialisation) or Serving()

    @property
    def redis(self) -> RedisConnection:
        """How to reach the broker's Redis, where every mmq store keeps its keys too."""
        return RedisConnection.parse(self.broker_url, master_name=self.redis_sentinel_master, tls=self.redis_tls)

    @property
    def result_redis(self) -> RedisConnection:
        """How to reach Celery's result backend (by default the broker's Redis)."""
        return RedisConnection.parse(self.result_backend, master_name=self.redis_sentinel_master, tls=self.redis_tls,
                                     variable="MMQ_RESULT_BACKEND")


def _redis_options(env: Mapping[str, str], broker: str, backend: str) -> dict[str, Any]:
    """MMQ_REDIS_*: what a sentinel:// or rediss:// URL needs beside it, checked against both URLs
    (a setting that no URL would use is refused, not ignored)."""
    master = env.get("MMQ_REDIS_SENTINEL_MASTER", "").strip() or None
    def path(name: str) -> str | None:
        return str(Path(env[name]).expanduser()) if env.get(name) else None

    tls = TLSFiles(ca_file=path("MMQ_REDIS_CA_FILE"), cert_file=path("MMQ_REDIS_CERT_FILE"),
                   key_file=path("MMQ_REDIS_KEY_FILE"))
    connections = [RedisConnection.parse(broker, master_name=master, tls=tls),
                   RedisConnection.parse(backend, master_name=master, tls=tls, variable="MMQ_RESULT_BACKEND")]
    check_master_name(master, connections)
    check_tls_files(tls, connections)
    return {"redis_sentinel_master": master, "redis_tls": tls}



def _serving(env: Mapping[str, str], specialisation: str) -> Serving:
    prefix = f"MMQ_{specialisation.upper()}"
    models = tuple(m.strip() for m in env.get(f"{prefix}_MODELS", "").split(",") if m.strip())
    return Serving(max_batch=_positive_int(env, f"{prefix}_MAX_BATCH", Serving.max_batch),
                   max_wait_ms=_positive_int(env, f"{prefix}_MAX_WAIT_MS", Serving.max_wait_ms),
                   models=models, max_loaded=_positive_int(env, f"{prefix}_MAX_LOADED", Serving.max_loaded),
                   prepare_processes=_count(env, f"{prefix}_PREPARE_PROCESSES", Serving.prepare_processes),
                   prepare_nice=_niceness(env, f"{prefix}_PREPARE_NICE", Serving.prepare_nice))


def _time_limits(env: Mapping[str, str], specialisation: str) -> TimeLimits:
    spec = SPECIALISATIONS[specialisation]
    prefix = f"MMQ_{specialisation.upper()}"
    soft = _positive_int(env, f"{prefix}_SOFT_TIME_LIMIT_S", spec.soft_time_limit_s)
    hard = _positive_int(env, f"{prefix}_TIME_LIMIT_S", spec.time_limit_s)
    if soft >= hard:
        raise ConfigurationError(f"{prefix}_SOFT_TIME_LIMIT_S ({soft}) must be below {prefix}_TIME_LIMIT_S ({hard})")
    return TimeLimits(soft_s=soft, hard_s=hard)


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    return _positive(env, name, default, int, "an integer")


def _niceness(env: Mapping[str, str], name: str, default: int) -> int:
    """Steps of niceness, 0 to 19 (the range of a Unix process's niceness)."""
    steps = _count(env, name, default)
    if steps > 19:
        raise ConfigurationError(f"{name} must be 0 to 19 (steps of niceness), got {steps}")
    return steps


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole number, 0 allowed."""
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise ConfigurationError(f"{name} must be a whole number (0 or more), got {raw!r}")
    return int(raw)


def _positive_number(env: Mapping[str, str], name: str, default: float) -> float:
    return _positive(env, name, default, float, "a number")


def _positive(env: Mapping[str, str], name: str, default: Any, parse: Any, what: str) -> Any:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be {what}, got {raw!r}") from None
    if not value > 0:  # also refuses NaN
        raise ConfigurationError(f"{name} must be positive, got {value}")
    return value


def _flag(env: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigurationError(f"{name} must be 1 or 0, got {raw!r}")


def _read_stack_env(data_dir: Path) -> dict[str, str]:
    path = data_dir / STACK_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text())["env"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"{path} is not a valid mmq stack file: {exc}") from None
