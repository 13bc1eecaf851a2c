"""The built-in pipelines: the tasks wired into the seed's multi-step recipes.

`mmq.tasks.catalogue` is where they are looked up (`PIPELINES`), each checked against the tasks.
"""

from __future__ import annotations

from dataclasses import replace

from .builtin_tasks import LONG_TEXT, TEXT2IMAGE_OPTIONS
from .language_model_tasks import WATCH_OPTIONS
from .fields import Field, Kind
from .pipelines import Format, Pipeline, Step
from .spaces import CLAP

_WATCH = {"video": "input.video", "question": "input.question", "max_new_tokens": "input.max_new_tokens",
          **{n: f"input.{n}" for n in WATCH_OPTIONS}}
_DIGEST_QUESTION = ("Summarize this video: what is seen, scene by scene, and what is said or heard. Answer in a "
                    "few sentences.")
_DIGEST = Format("What is seen, scene by scene:\n{captions.text}\n\nWhat is said:\n{transcript.text}")

BUILTIN_PIPELINES: tuple[Pipeline, ...] = (
    Pipeline(
        name="imagine",
        inputs={"prompt": Field(Kind.TEXT, "What to draw.", max_length=2000), **TEXT2IMAGE_OPTIONS},
        steps=(
            Step("text2image", "text2image",
                 {"prompt": "input.prompt", **{n: f"input.{n}" for n in TEXT2IMAGE_OPTIONS}}),
            Step("describe", "caption", {"image": "text2image.image"}),
            Step("summarize", "summarize", {"text": "describe.text"}),
        ),
        outputs={"image": "text2image.image", "description": "describe.text", "summary": "summarize.summary"},
        description="The seed's example: a prompt becomes an image, the image a description, the "
                    "description a summary.",
    ),
    Pipeline(
        name="remix",
        inputs={"image": Field(Kind.IMAGE, "The image to remix."), **TEXT2IMAGE_OPTIONS},
        steps=(
            Step("caption", "caption", {"image": "input.image"}),
            Step("text2image", "text2image",
                 {"prompt": "caption.text", **{n: f"input.{n}" for n in TEXT2IMAGE_OPTIONS}}),
        ),
        outputs={"caption": "caption.text", "image": "text2image.image"},
        description="Caption an image, then draw a new image from the caption.",
    ),
    Pipeline(
        name="voice-to-image",
        inputs={"audio": Field(Kind.AUDIO, "A spoken description."), **TEXT2IMAGE_OPTIONS},
        steps=(
            Step("transcribe", "transcribe", {"audio": "input.audio"}),
            Step("text2image", "text2image",
                 {"prompt": "transcribe.text", **{n: f"input.{n}" for n in TEXT2IMAGE_OPTIONS}}),
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
                                             "candidates": "embed_images.image_embeddings",
                                             "query_space": "embed_query.space",
                                             "candidate_spaces": "embed_images.space"}),
        ),
        outputs={"ranking": "rank.ranking"},
        description="Embed every image in parallel (CLIP), embed the query, rank the images: "
                    "[{index, score}], best first.",
    ),
    Pipeline(
        name="sound-search",
        inputs={
            "query": Field(Kind.TEXT, "What to listen for.", max_length=1000),
            "sounds": Field(Kind.AUDIO, "The sounds to search (over 10 s: their first 10 s are heard).",
                            many=True, max_items=4096),
        },
        steps=(
            Step("embed_sounds", "embed", each={"sounds": "input.sounds"}),
            # The query in CLAP's space, by CLAP's text tower: CLIP's would not be comparable.
            Step("embed_query", "embed", {"texts": "input.query", "space": Format(CLAP)}),
            Step("rank", "rank_embeddings", {"query": "embed_query.text_embeddings",
                                             "candidates": "embed_sounds.sound_embeddings",
                                             "query_space": "embed_query.space",
                                             "candidate_spaces": "embed_sounds.space"}),
        ),
        outputs={"ranking": "rank.ranking"},
        description="Embed every sound in parallel (CLAP), embed the query with CLAP's text tower, rank "
                    "the sounds: [{index, score}], best first.",
    ),
    Pipeline(
        name="describe-and-speak",
        inputs={"image": Field(Kind.IMAGE, "The image to describe aloud."),
                "max_new_tokens": Field(Kind.INTEGER, "Longest description, in tokens.", default=256,
                                        minimum=1, maximum=1024)},
        steps=(
            Step("describe", "describe", {"image": "input.image", "max_new_tokens": "input.max_new_tokens"}),
            Step("speak", "speak", {"text": "describe.description"}),
        ),
        outputs={"description": "describe.description", "audio": "speak.audio"},
        description="An image described at length, then the description read aloud.",
    ),
    Pipeline(
        name="voice-command",
        inputs={
            "audio": Field(Kind.AUDIO, "A spoken description of a scene."),
            **TEXT2IMAGE_OPTIONS,
            "duration_s": Field(Kind.NUMBER, "Length of the sound, in seconds.", default=5.0, minimum=0.5,
                                maximum=30),
        },
        steps=(
            Step("transcribe", "transcribe", {"audio": "input.audio"}),
            Step("text2image", "text2image",
                 {"prompt": "transcribe.text", **{n: f"input.{n}" for n in TEXT2IMAGE_OPTIONS}}),
            Step("compose", "compose", {"prompt": "transcribe.text", "duration_s": "input.duration_s",
                                        "seed": "input.seed"}),
        ),
        outputs={"transcript": "transcribe.text", "image": "text2image.image", "sound": "compose.audio"},
        description="Generation of images and sounds by voice command: the speech transcribed, then an "
                    "image and a sound made from it in parallel.",
    ),
    Pipeline(
        name="storyboard",
        inputs={
            "text": Field(Kind.TEXT, "The story.", max_length=LONG_TEXT),
            "max_tokens": Field(Kind.INTEGER, "Longest summary, in tokens (fewer sentences, fewer pictures).",
                                default=60, minimum=8, maximum=1024),
            "min_tokens": Field(Kind.INTEGER, "Shortest summary, in tokens.", default=8, minimum=0,
                                maximum=512),
            **{n: TEXT2IMAGE_OPTIONS[n] for n in ("negative_prompt", "steps", "guidance", "seed")},
            "width": replace(TEXT2IMAGE_OPTIONS["width"], default=256),
            "height": replace(TEXT2IMAGE_OPTIONS["height"], default=256),
            "seconds_per_image": Field(Kind.NUMBER, "How long each picture is shown.", default=2.0,
                                       minimum=0.1, maximum=60),
        },
        steps=(
            Step("summarize", "summarize", {"text": "input.text", "max_tokens": "input.max_tokens",
                                            "min_tokens": "input.min_tokens"}),
            Step("pictures", "text2image",
                 {n: f"input.{n}" for n in ("negative_prompt", "steps", "guidance", "seed", "width",
                                            "height")},
                 each={"prompt": "summarize.sentences"}),
            Step("video", "slideshow", {"images": "pictures.image",
                                        "seconds_per_image": "input.seconds_per_image"}),
        ),
        outputs={"summary": "summarize.summary", "pictures": "pictures.image", "video": "video.video"},
        description="A story summarized, one picture drawn per sentence of the summary (in parallel), "
                    "the pictures made into a short video.",
    ),
    Pipeline(
        name="video-qa",
        inputs={
            "video": Field(Kind.VIDEO, "A video, with or without sound."),
            "question": Field(Kind.TEXT, "The question about what is seen or heard.", max_length=2000),
            "max_new_tokens": Field(Kind.INTEGER, "Longest answer, in tokens.", default=128, minimum=1,
                                    maximum=4096),
            **WATCH_OPTIONS,
        },
        steps=(Step("watch", "watch", _WATCH),),
        outputs={"answer": "watch.answer"},
        description="A question about a video answered by one omni model that sees its frames and hears its "
                    "sound together (Qwen2.5-Omni).",
    ),
    Pipeline(
        name="video-digest-omni",
        inputs={
            "video": Field(Kind.VIDEO, "A video with (or without) sound."),
            "question": Field(Kind.TEXT, "What to ask of the whole video.", default=_DIGEST_QUESTION,
                              max_length=2000),
            "max_new_tokens": Field(Kind.INTEGER, "Longest summary, in tokens.", default=256, minimum=1,
                                    maximum=4096),
            **WATCH_OPTIONS,
        },
        steps=(Step("digest", "watch", _WATCH),),
        outputs={"summary": "digest.answer"},
        description="video-digest in one step: the omni model watches and hears the whole video once and "
                    "writes the summary, instead of captioning every frame, transcribing and summarizing.",
    ),
)
