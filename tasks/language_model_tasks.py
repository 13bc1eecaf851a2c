"""The built-in tasks that a language model answers: the omni model's (`watch`, `listen`, `look`: a
video, a sound or an image and a question) and the planner's (`plan`: a request in words becomes a
pipeline). Part of `BUILTIN_TASKS` (`mmq.tasks.builtin_tasks`).
"""

from __future__ import annotations

from .fields import Field, Kind
from .taskspec import TaskSpec, outputs

# What every omni task asks with (Qwen2.5-Omni's context is 32,768 tokens, media included).
_OMNI = {
    "question": Field(Kind.TEXT, "The question, in plain words.", max_length=2000),
    "max_new_tokens": Field(Kind.INTEGER, "Longest answer, in tokens.", default=128, minimum=1, maximum=4096),
}
# How a video is watched: Qwen2.5-Omni was trained on 2 frames a second; its video processor takes
# at most 768 frames.
WATCH_OPTIONS: dict[str, Field] = {
    "fps": Field(Kind.NUMBER, "Frames sampled per second of video.", default=2.0, minimum=0.1, maximum=8),
    "max_frames": Field(Kind.INTEGER, "Most frames to sample: a video longer than max_frames / fps seconds is "
                        "refused.", default=64, minimum=1, maximum=768),
}

LANGUAGE_MODEL_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        name="watch",
        specialisation="omni",
        inputs={"video": Field(Kind.VIDEO, "A video, with or without sound: mp4, webm, mkv, avi or mov."),
                **_OMNI, **WATCH_OPTIONS},
        outputs=outputs(answer=Kind.TEXT),
        memory_inputs=("max_frames", "fps", "max_new_tokens"),
        description="Answer a question about a video, seen and heard together (Qwen2.5-Omni); a video without "
                    "sound is watched silently. At most the model's audio window long (300 s).",
    ),
    TaskSpec(
        name="listen",
        specialisation="omni",
        inputs={"audio": Field(Kind.AUDIO, "Speech, music or any sound: wav, flac, mp3, ogg or m4a, or a "
                               "video's sound track."), **_OMNI},
        outputs=outputs(answer=Kind.TEXT),
        memory_inputs=("audio", "max_new_tokens"),
        description="Answer a question about a sound (Qwen2.5-Omni): what is said, by whom, what is heard. "
                    "At most the model's audio window long (300 s).",
    ),
    TaskSpec(
        name="look",
        specialisation="omni",
        inputs={"image": Field(Kind.IMAGE, "The image the question is about."), **_OMNI},
        outputs=outputs(answer=Kind.TEXT),
        memory_inputs=("image", "max_new_tokens"),
        description="Answer a question about an image with the omni model (Qwen2.5-Omni).",
    ),
    TaskSpec(
        name="plan",
        specialisation="plan",
        inputs={
            "request": Field(Kind.TEXT, "What to do, in words.", max_length=2000),
            "files": Field(Kind.JSON, "The files the plan may use: {input name: kind}, e.g. {\"audio\": \"audio\"}",
                           default={}),
        },
        outputs=outputs(pipeline=Kind.JSON),
        description="Plan a pipeline for a request in words and the files it names: a pipeline spec (the JSON "
                    "that `mmq run ./plan.json` takes) whose inputs are the files it uses. Fails with "
                    "NoPipelineFits when nothing in the catalogue fits.",
    ),
)
