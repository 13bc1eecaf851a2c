"""The specialisations: one model family each, one queue each, with its own time limits.

Static facts only; the code that loads and runs the models lives in `mmq.workers`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecialisationSpec:
    """What the contract knows about a specialisation: its queue, default model and time limits."""

    name: str
    default_model: str
    soft_time_limit_s: int
    time_limit_s: int
    description: str

    @property
    def queue(self) -> str:
        return self.name

    @property
    def model_env_var(self) -> str:
        return f"MMQ_{self.name.upper()}_MODEL"


SPECIALISATIONS: dict[str, SpecialisationSpec] = {
    spec.name: spec
    for spec in (
        SpecialisationSpec(
            name="caption",
            default_model="Salesforce/blip-image-captioning-base",
            soft_time_limit_s=120,
            time_limit_s=180,
            description="Image captioning with BLIP.",
        ),
        SpecialisationSpec(
            name="diffusion",
            default_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
            soft_time_limit_s=600,
            time_limit_s=720,
            description="Text-to-image with Stable Diffusion (diffusers).",
        ),
    )
}


# A worker pool process sets this key (expiring, refreshed) once its model is loaded: readiness.
READY_KEY_PREFIX = "mmq:worker:"


def worker_name(specialisation: str, gpu: str | None, pid: int, host: str) -> str:
    """The Celery node name of a worker: what Flower shows and what its readiness key ends with."""
    where = f"gpu{gpu}" if gpu is not None else "cpu"
    return f"{specialisation}-{where}-{pid}@{host}"
