"""B1's baseline: the same tiny BLIP captioner as a bare Celery task (no job record, no events,
no artifact store: the image travels inline), run by `celery -A bench.bare_worker worker`."""

from __future__ import annotations

import base64
import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

app = Celery("bare", broker=os.environ["MMQ_BROKER_URL"], backend=os.environ["MMQ_BROKER_URL"])
app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                worker_prefetch_multiplier=1, task_acks_late=True, task_default_queue="bare")
_model: dict[str, Any] = {}


@worker_process_init.connect
def load(**_: Any) -> None:
    from mmq.tasks.settings import Settings
    from mmq.workers.caption import CaptionSpecialisation
    from mmq.workers.devices import limit_cpu_threads, pick_device
    from mmq.workers.specialisation_base import ModelContext

    limit_cpu_threads()
    settings = Settings.from_env()
    context = ModelContext(model="tiny", device=pick_device(), cache_dir=settings.data_dir / "models",
                           settings=settings)
    _model["caption"] = CaptionSpecialisation(context)
    _model["caption"].setup()


@app.task(name="bare.caption")
def caption(image_b64: str, max_new_tokens: int) -> str:
    from mmq.workers.specialisation_base import ArtifactInput

    data = base64.b64decode(image_b64)
    image = ArtifactInput(media_type="image/png", sha256="", size=len(data), fetch=lambda: data)
    [out] = _model["caption"].run("caption", [{"image": image, "max_new_tokens": max_new_tokens}],
                                  lambda done, total: None)
    return out["text"]
