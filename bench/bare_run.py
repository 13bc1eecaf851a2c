"""B5's baseline: a bare process that imports the libraries, loads a specialisation's model and runs
one job in process, then exits. `python -m bench.bare_run NAME TASK IMAGE_PATH|-` (the image is
the caption input; text2image gets B5's prompt). What a worker adds on top of this is its cold-start
overhead: Celery, Redis, the artifact store, the job record."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def run_once(name: str, task: str, image: Path | None) -> list[dict[str, Any]]:
    from mmq.tasks.catalogue import TASKS
    from mmq.tasks.settings import Settings
    from mmq.tasks.specialisation_specs import SPECIALISATIONS
    from mmq.workers.devices import limit_cpu_threads, pick_device
    from mmq.workers.registry import specialisation_class
    from mmq.workers.specialisation_base import ArtifactInput, ModelContext

    limit_cpu_threads()
    settings = Settings.from_env()
    model = os.environ.get(SPECIALISATIONS[name].model_env_var, "tiny")
    specialisation = specialisation_class(name)(ModelContext(model=model, device=pick_device(),
                                                             cache_dir=settings.data_dir / "models",
                                                             settings=settings))
    specialisation.setup()
    if image is not None:
        data = image.read_bytes()
        inputs: dict[str, Any] = {"image": ArtifactInput(media_type="image/jpeg", sha256="", size=len(data),
                                                         fetch=lambda: data), "max_new_tokens": 20}
    else:
        inputs = {"prompt": "a lighthouse", "steps": 20}
    defaults = {field: (list(spec.default) if spec.many else spec.default)
                for field, spec in TASKS[task].inputs.items() if not spec.required}
    return specialisation.run(task, [{**defaults, **inputs}], lambda done, total: None)


if __name__ == "__main__":
    name, task, image = sys.argv[1:4]
    run_once(name, task, None if image == "-" else Path(image))
