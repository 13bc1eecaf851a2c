"""The built-in tasks and pipelines, by name."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import UnknownTask
from .fields import Field, Kind
from .pipelines import Pipeline, Step, TaskSpec

_TEXT2IMAGE_OPTIONS: dict[str, Field] = {
    "negative_prompt": Field(Kind.TEXT, "What the image should not show.", default="", max_length=2000),
    "steps": Field(Kind.INTEGER, "Denoising steps.", default=30, minimum=1, maximum=200),
    "guidance": Field(Kind.NUMBER, "Classifier-free guidance scale.", default=7.5, minimum=0, maximum=30),
    "seed": Field(Kind.INTEGER, "Random seed; the same inputs give the same image.", default=0,
                  minimum=0, maximum=2**32 - 1),
    "width": Field(Kind.INTEGER, "Image width in pixels.", default=512, minimum=64, maximum=2048, multiple_of=8),
    "height": Field(Kind.INTEGER, "Image height in pixels.", default=512, minimum=64, maximum=2048, multiple_of=8),
}

TASKS: Mapping[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec(
            name="caption",
            specialisation="caption",
            inputs={
                "image": Field(Kind.IMAGE, "The image to describe."),
                "max_new_tokens": Field(Kind.INTEGER, "Longest caption, in tokens.", default=30,
                                        minimum=1, maximum=200),
            },
            outputs={"text": Kind.TEXT},
            description="Describe an image in one sentence (BLIP).",
        ),
        TaskSpec(
            name="text2image",
            specialisation="diffusion",
            inputs={"prompt": Field(Kind.TEXT, "What to draw.", max_length=2000), **_TEXT2IMAGE_OPTIONS},
            outputs={"image": Kind.IMAGE},
            description="Generate an image from a prompt (Stable Diffusion).",
        ),
    )
}

PIPELINES: Mapping[str, Pipeline] = {
    p.name: p.validate(TASKS)
    for p in (
        Pipeline(
            name="remix",
            inputs={"image": Field(Kind.IMAGE, "The image to remix."), **_TEXT2IMAGE_OPTIONS},
            steps=(
                Step("caption", "caption", {"image": "input.image"}),
                Step("text2image", "text2image",
                     {"prompt": "caption.text", **{n: f"input.{n}" for n in _TEXT2IMAGE_OPTIONS}}),
            ),
            outputs={"caption": "caption.text", "image": "text2image.image"},
            description="Caption an image, then draw a new image from the caption.",
        ),
    )
}


def lookup(name: str) -> Pipeline:
    """The pipeline named `name`, or the one-step pipeline of the task named `name`."""
    if name in PIPELINES:
        return PIPELINES[name]
    if name in TASKS:
        return Pipeline.for_task(TASKS[name])
    import difflib

    close = difflib.get_close_matches(name, [*PIPELINES, *TASKS], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownTask(f"no task or pipeline named {name!r}{hint}; see `mmq pipelines`")


def describe_all() -> list[dict]:
    return [*(p.describe() for p in PIPELINES.values()), *(t.describe() for t in TASKS.values())]
