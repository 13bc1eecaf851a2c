"""`mmq demo`: the whole path once — the local stack with tiny models, `remix` on a sample image,
the outputs with their artifact URLs, the image URL fetched back — then stop what it started."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

from mmq.tasks.catalogue import PIPELINES, TASKS
from mmq.tasks.errors import InvalidInput
from mmq.tasks.jobs import JobStatus

from .client import Client
from .stack import LocalStack

SAMPLE_IMAGE = Path("samples/house.png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_demo(*, image: str | None = None) -> int:
    image_path = Path(image) if image else SAMPLE_IMAGE
    if not image_path.is_file():
        raise InvalidInput(f"no image at {image_path}: run from the repository root or pass --image PATH")
    stack = LocalStack(os.environ.get("MMQ_DATA_DIR", ".mmq"))
    already_up = _is_up(stack)
    started = time.monotonic()
    # Only what `remix` needs: a caption worker and a diffusion worker.
    stack.up(models="tiny", specialisations=sorted({TASKS[s.task].specialisation for s in PIPELINES["remix"].steps}))
    print(f"stack ready in {time.monotonic() - started:.1f} s")
    try:
        return _remix(image_path)
    finally:
        if not already_up:
            stack.down()


def _remix(image_path: Path) -> int:
    client = Client.from_env()
    job = client.submit("remix", image=image_path, width=128, height=128, steps=10, seed=7)
    print(f"submitted remix job {job.id} for {image_path}")
    started = time.monotonic()
    record = job.wait(timeout_s=600)
    print(f"job {record.status.value} in {time.monotonic() - started:.2f} s")
    for step in record.to_dict()["steps"]:
        took = (step["finished_at"] or 0) - (step["started_at"] or 0)
        print(f"  step {step['name']} on queue {step['queue']}: {step['status']} ({took:.2f} s)")
    summary = job.to_dict(record)
    for name, value in (summary["outputs"] or {}).items():
        if isinstance(value, dict):
            print(f"  {name}: {value['uri']} ({value['media_type']}, {value['size']} bytes)")
            print(f"    url: {value['url']}")
        else:
            print(f"  {name}: {value!r}")
    if record.status is not JobStatus.SUCCEEDED:
        print(f"  error: {record.error}")
        return 1
    with urllib.request.urlopen(summary["outputs"]["image"]["url"], timeout=30) as response:
        body = response.read()
    is_png = body.startswith(PNG_SIGNATURE)
    print(f"the image URL downloads {'a PNG' if is_png else 'something that is not a PNG'} ({len(body)} bytes)")
    return 0 if is_png else 1


def _is_up(stack: LocalStack) -> bool:
    from .stack import StackState

    state = StackState.load(stack.data_dir)
    return bool(state) and all(p.running() for p in state.processes)
