"""The built-in tasks and pipelines, by name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from .errors import UnknownTask
from .fields import Field, Kind
from .pipelines import Format, Pipeline, Step
from .taskspec import Output, TaskSpec, outputs

_TEXT2IMAGE_OPTIONS: dict[str, Field] = {
    "negative_prompt": Field(Kind.TEXT, "What the image should not show.", default="", max_length=2000),
    "steps": Field(Kind.INTEGER, "Denoising steps.", default=30, minimum=1, maximum=200),
    "guidance": Field(Kind.NUMBER, "Classifier-free guidance scale.", default=7.5, minimum=0, maximum=30),
    "seed": Field(Kind.INTEGER, "Random seed; the same inputs give the same image.", default=0,
                  minimum=0, maximum=2**32 - 1),
    "width": Field(Kind.INTEGER, "Image width in pixels.", default=512, minimum=64, maximum=2048, multiple_of=8),
    "height": Field(Kind.INTEGER, "Image height in pixels.", default=512, minimum=64, maximum=2048, multiple_of=8),
}

_LONG_TEXT = 100_000  # characters; longer text is refused at submission
_MANY = 256  # items in one list input
_RANKING = "[{kind: image|text, index, score}], best first"

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
            outputs=outputs(text=Kind.TEXT),
            description="Describe an image in one sentence (BLIP).",
        ),
        TaskSpec(
            name="text2image",
            specialisation="diffusion",
            inputs={"prompt": Field(Kind.TEXT, "What to draw.", max_length=2000), **_TEXT2IMAGE_OPTIONS},
            outputs=outputs(image=Kind.IMAGE),
            description="Generate an image from a prompt (Stable Diffusion).",
        ),
        TaskSpec(
            name="image2image",
            specialisation="diffusion",
            inputs={
                "image": Field(Kind.IMAGE, "The image to start from (its size is kept, rounded down to a multiple of 8)."),
                "prompt": Field(Kind.TEXT, "What to turn it into.", max_length=2000),
                "strength": Field(Kind.NUMBER, "How far from the image to go: 0 keeps it, 1 ignores it.",
                                  default=0.75, minimum=0, maximum=1),
                **{k: v for k, v in _TEXT2IMAGE_OPTIONS.items() if k not in ("width", "height")},
            },
            outputs=outputs(image=Kind.IMAGE),
            description="Redraw an image following a prompt (Stable Diffusion img2img).",
        ),
        TaskSpec(
            name="transcribe",
            specialisation="speech",
            inputs={
                "audio": Field(Kind.AUDIO, "Speech: wav, flac, mp3, ogg or m4a, any sample rate and channels."),
                "language": Field(Kind.TEXT, "Spoken language, ISO 639-1 (e.g. en); empty to detect it.",
                                  default="", max_length=8),
            },
            outputs=outputs(text=Kind.TEXT, segments=Kind.JSON, language=Kind.TEXT),
            description="Transcribe speech (Whisper); segments carry start and end seconds.",
        ),
        TaskSpec(
            name="summarize",
            specialisation="summarize",
            inputs={
                "text": Field(Kind.TEXT, "The text to summarize; long text is summarized in chunks.",
                              max_length=_LONG_TEXT),
                "max_tokens": Field(Kind.INTEGER, "Longest summary, in tokens.", default=130, minimum=8, maximum=1024),
                "min_tokens": Field(Kind.INTEGER, "Shortest summary, in tokens.", default=20, minimum=0, maximum=512),
            },
            outputs=outputs(summary=Kind.TEXT),
            description="Summarize text (BART).",
        ),
        TaskSpec(
            name="translate",
            specialisation="translate",
            inputs={
                "text": Field(Kind.TEXT, "The text to translate; long text is translated in chunks.",
                              max_length=_LONG_TEXT),
                "source_language": Field(Kind.TEXT, "Language code of the text (the model's codes, e.g. eng_Latn).",
                                         default="eng_Latn", max_length=16),
                "target_language": Field(Kind.TEXT, "Language code to translate into (e.g. fra_Latn).",
                                         default="fra_Latn", max_length=16),
            },
            outputs=outputs(translation=Kind.TEXT),
            description="Translate text (NLLB).",
        ),
        TaskSpec(
            name="embed",
            specialisation="clip",
            inputs={
                "images": Field(Kind.IMAGE, "Images to embed.", default=(), many=True, max_items=_MANY),
                "texts": Field(Kind.TEXT, "Texts to embed.", default=(), many=True, max_items=_MANY),
            },
            outputs=outputs(image_embeddings=Kind.EMBEDDING, text_embeddings=Kind.EMBEDDING),
            description="CLIP embeddings (L2-normalised) of images and texts, in one space.",
            one_of=("images", "texts"),
        ),
        TaskSpec(
            name="rank",
            specialisation="clip",
            inputs={
                "query": Field(Kind.TEXT, "What to look for.", max_length=1000),
                "images": Field(Kind.IMAGE, "Candidate images.", default=(), many=True, max_items=_MANY),
                "texts": Field(Kind.TEXT, "Candidate texts.", default=(), many=True, max_items=_MANY),
            },
            outputs=outputs(ranking=Kind.JSON),
            description=f"Order images and texts by CLIP similarity to a text query: {_RANKING}.",
            one_of=("images", "texts"),
        ),
        TaskSpec(
            name="embed_text",
            specialisation="sentence",
            inputs={"texts": Field(Kind.TEXT, "Texts to embed.", many=True, max_items=_MANY)},
            outputs=outputs(embeddings=Kind.EMBEDDING),
            description="Sentence embeddings (L2-normalised) with a sentence-transformers model.",
        ),
        TaskSpec(
            name="rank_text",
            specialisation="sentence",
            inputs={
                "query": Field(Kind.TEXT, "What to look for.", max_length=1000),
                "texts": Field(Kind.TEXT, "Candidate texts.", many=True, max_items=_MANY),
            },
            outputs=outputs(ranking=Kind.JSON),
            description=f"Order texts by sentence-embedding similarity to a query: {_RANKING}.",
        ),
        TaskSpec(
            name="rank_embeddings",
            specialisation="clip",
            inputs={
                "query": Field(Kind.EMBEDDING, "The query's embedding (its first row is used)."),
                "candidates": Field(Kind.EMBEDDING, "Candidate embeddings; every row is one candidate.",
                                    many=True, max_items=4096),
            },
            outputs=outputs(ranking=Kind.JSON),
            description="Order precomputed embeddings by cosine similarity to a query embedding: "
                        "[{index, score}], best first.",
        ),
        TaskSpec(
            name="extract",
            specialisation="media",
            inputs={
                "video": Field(Kind.VIDEO, "A video: mp4, webm, mkv, avi or mov."),
                "interval_s": Field(Kind.NUMBER, "Seconds between sampled frames.", default=5.0,
                                    minimum=0.1, maximum=3600),
                "max_frames": Field(Kind.INTEGER, "Most frames to sample.", default=32, minimum=1, maximum=256),
            },
            outputs=outputs(frames=Output(Kind.IMAGE, many=True), audio=Kind.AUDIO, duration_s=Kind.NUMBER),
            description="Frames sampled every interval_s seconds (PNG) and the audio track (16 kHz mono WAV; "
                        "silence when the video has none).",
        ),
    )
}

_DIGEST = Format("What is seen, scene by scene:\n{captions.text}\n\nWhat is said:\n{transcript.text}")

# Every task of a model family may name the model to run it with: one of the ids its workers
# serve (model multiplexing); empty means the worker's default.
MODEL_INPUT = Field(Kind.TEXT, "A model id that the workers of this task serve (their default, or one of "
                    "MMQ_<SPECIALISATION>_MODELS); empty: the default.", default="", max_length=300)
_WITHOUT_MODEL = frozenset({"media"})  # PyAV, no model to choose
TASKS = {name: task if task.specialisation in _WITHOUT_MODEL
         else replace(task, inputs={**task.inputs, "model": MODEL_INPUT}) for name, task in TASKS.items()}

PIPELINES: Mapping[str, Pipeline] = {
    p.name: p.validate(TASKS)
    for p in (
        Pipeline(
            name="imagine",
            inputs={"prompt": Field(Kind.TEXT, "What to draw.", max_length=2000), **_TEXT2IMAGE_OPTIONS},
            steps=(
                Step("text2image", "text2image",
                     {"prompt": "input.prompt", **{n: f"input.{n}" for n in _TEXT2IMAGE_OPTIONS}}),
                Step("describe", "caption", {"image": "text2image.image"}),
                Step("summarize", "summarize", {"text": "describe.text"}),
            ),
            outputs={"image": "text2image.image", "description": "describe.text", "summary": "summarize.summary"},
            description="The seed's example: a prompt becomes an image, the image a description, the "
                        "description a summary.",
        ),
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
        Pipeline(
            name="voice-to-image",
            inputs={"audio": Field(Kind.AUDIO, "A spoken description."), **_TEXT2IMAGE_OPTIONS},
            steps=(
                Step("transcribe", "transcribe", {"audio": "input.audio"}),
                Step("text2image", "text2image",
                     {"prompt": "transcribe.text", **{n: f"input.{n}" for n in _TEXT2IMAGE_OPTIONS}}),
            ),
            outputs={"transcript": "transcribe.text", "image": "text2image.image"},
            description="Generation of images by voice command: speech to text to image.",
        ),
        Pipeline(
            name="video-digest",
            inputs={
                "video": Field(Kind.VIDEO, "A video with (or without) sound."),
                "interval_s": Field(Kind.NUMBER, "Seconds between the frames described.", default=5.0,
                                    minimum=0.1, maximum=3600),
                "max_frames": Field(Kind.INTEGER, "Most frames to describe.", default=16, minimum=1, maximum=256),
            },
            steps=(
                Step("extract", "extract", {"video": "input.video", "interval_s": "input.interval_s",
                                            "max_frames": "input.max_frames"}),
                Step("captions", "caption", each={"image": "extract.frames"}),
                Step("transcript", "transcribe", {"audio": "extract.audio"}),
                Step("summary", "summarize", {"text": _DIGEST}),
            ),
            outputs={"summary": "summary.summary", "captions": "captions.text",
                     "transcript": "transcript.text", "frames": "extract.frames"},
            description="Frames and sound out of a video; the frames captioned in parallel, the sound "
                        "transcribed; one summary of both.",
        ),
        Pipeline(
            name="image-search",
            inputs={
                "query": Field(Kind.TEXT, "What to look for.", max_length=1000),
                "images": Field(Kind.IMAGE, "The images to search.", many=True, max_items=4096),
            },
            steps=(
                Step("embed_images", "embed", each={"images": "input.images"}),
                Step("embed_query", "embed", {"texts": "input.query"}),
                Step("rank", "rank_embeddings", {"query": "embed_query.text_embeddings",
                                                 "candidates": "embed_images.image_embeddings"}),
            ),
            outputs={"ranking": "rank.ranking"},
            description="Embed every image in parallel (CLIP), embed the query, rank the images: "
                        "[{index, score}], best first.",
        ),
    )
}


def lookup(name: str, extra: Mapping[str, Pipeline] | None = None) -> Pipeline:
    """The pipeline named `name` (built in, or among `extra`: those of the pipelines folder), or
    the one-step pipeline of the task named `name`."""
    extra = extra or {}
    if name in extra:
        return extra[name]
    if name in PIPELINES:
        return PIPELINES[name]
    if name in TASKS:
        return Pipeline.for_task(TASKS[name])
    import difflib

    close = difflib.get_close_matches(name, [*extra, *PIPELINES, *TASKS], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownTask(f"no task or pipeline named {name!r}{hint}; see `mmq pipelines`")


def describe_all(extra: Mapping[str, Pipeline] | None = None) -> list[dict]:
    pipelines = {**PIPELINES, **(extra or {})}
    return [*(p.describe() for p in pipelines.values()), *(t.describe() for t in TASKS.values())]
