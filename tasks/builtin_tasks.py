"""The built-in tasks: one model operation each, with its inputs, outputs and specialisation.

`mmq.tasks.catalogue` is where they are looked up (`TASKS`), each with the `model` input added.
"""

from __future__ import annotations

from .fields import Field, Kind
from .spaces import same_space, space_of
from .language_model_tasks import LANGUAGE_MODEL_TASKS
from .taskspec import Output, TaskSpec, outputs

TEXT2IMAGE_OPTIONS: dict[str, Field] = {
    "negative_prompt": Field(Kind.TEXT, "What the image should not show.", default="", max_length=2000),
    "steps": Field(Kind.INTEGER, "Denoising steps.", default=30, minimum=1, maximum=200),
    "guidance": Field(Kind.NUMBER, "Classifier-free guidance scale.", default=7.5, minimum=0, maximum=30),
    "seed": Field(Kind.INTEGER, "Random seed; the same inputs give the same image.", default=0,
                  minimum=0, maximum=2**32 - 1),
    "width": Field(Kind.INTEGER, "Image width in pixels.", default=512, minimum=64, maximum=2048,
                   multiple_of=8),
    "height": Field(Kind.INTEGER, "Image height in pixels.", default=512, minimum=64, maximum=2048,
                    multiple_of=8),
}

LONG_TEXT = 100_000  # characters; longer text is refused at submission
_MANY = 256  # items in one list input
_RANKING = "[{kind: image|text, index, score}], best first"
# CLAP's window: the default checkpoint (htsat-unfused) reads 10 s of a sound, no more.
_SOUNDS = ("Sounds (wav, flac, mp3, ogg, m4a; any rate and channels); a sound over 10 s is embedded by "
           "its first 10 s, CLAP's window")
_SPACE = Field(Kind.TEXT, "The space to embed texts in when no image or sound says: 'clip' (beside images) "
               "or 'clap' (beside sounds).", default="", max_length=8)

BUILTIN_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        name="caption",
        specialisation="caption",
        inputs={
            "image": Field(Kind.IMAGE, "The image to describe."),
            "max_new_tokens": Field(Kind.INTEGER, "Longest caption, in tokens.", default=30,
                                    minimum=1, maximum=200),
        },
        outputs=outputs(text=Kind.TEXT),
        memory_inputs=("max_new_tokens",),
        description="Describe an image in one sentence (BLIP).",
    ),
    TaskSpec(
        name="text2image",
        specialisation="diffusion",
        inputs={"prompt": Field(Kind.TEXT, "What to draw.", max_length=2000), **TEXT2IMAGE_OPTIONS},
        outputs=outputs(image=Kind.IMAGE),
        memory_inputs=("width", "height"),
        description="Generate an image from a prompt (Stable Diffusion).",
    ),
    TaskSpec(
        name="image2image",
        specialisation="diffusion",
        inputs={
            "image": Field(Kind.IMAGE, "The image to start from; it is scaled down (aspect kept, multiples "
                           "of 8) to the model's working size, 512 px on the longer side for v1-5, which "
                           "is the output's size."),
            "prompt": Field(Kind.TEXT, "What to turn it into.", max_length=2000),
            "strength": Field(Kind.NUMBER, "How far from the image to go: 0 keeps it, 1 ignores it.",
                              default=0.75, minimum=0, maximum=1),
            **{k: v for k, v in TEXT2IMAGE_OPTIONS.items() if k not in ("width", "height")},
        },
        outputs=outputs(image=Kind.IMAGE),
        memory_inputs=("image",),
        description="Redraw an image following a prompt (Stable Diffusion img2img).",
    ),
    TaskSpec(
        name="transcribe",
        specialisation="speech",
        inputs={
            "audio": Field(Kind.AUDIO, "Speech: wav, flac, mp3, ogg or m4a, any sample rate and channels."),
            "language": Field(Kind.TEXT, "Spoken language: ISO 639-1 (fr), BCP-47 (pt-BR), ISO 639-3 (fra) "
                              "or an NLLB code (fra_Latn); empty to detect it. The output says it as given "
                              "(detected: ISO 639-1).", default="", max_length=16),
        },
        outputs=outputs(text=Kind.TEXT, segments=Kind.JSON, language=Kind.TEXT),
        memory_inputs=("audio",),
        description="Transcribe speech (Whisper); segments carry start and end seconds.",
    ),
    TaskSpec(
        name="summarize",
        specialisation="summarize",
        inputs={
            "text": Field(Kind.TEXT, "The text to summarize; long text is summarized in chunks.",
                          max_length=LONG_TEXT),
            "max_tokens": Field(Kind.INTEGER, "Longest summary, in tokens.", default=130, minimum=8,
                                maximum=1024),
            "min_tokens": Field(Kind.INTEGER, "Shortest summary, in tokens.", default=20, minimum=0,
                                maximum=512),
        },
        outputs=outputs(summary=Kind.TEXT, sentences=Output(Kind.TEXT, many=True)),
        memory_inputs=("text", "max_tokens"),
        description="Summarize text (BART); the summary also comes split into its sentences.",
    ),
    TaskSpec(
        name="translate",
        specialisation="translate",
        inputs={
            "text": Field(Kind.TEXT, "The text to translate; long text is translated in chunks.",
                          max_length=LONG_TEXT),
            "source_language": Field(Kind.TEXT, "Language of the text: ISO 639-1 (en), BCP-47 (zh-Hant, "
                                     "pt-BR), ISO 639-3 (eng) or the model's own code (eng_Latn).",
                                     default="en", max_length=16),
            "target_language": Field(Kind.TEXT, "Language to translate into, in any of those forms (fr, "
                                     "fra_Latn).", default="fr", max_length=16),
        },
        outputs=outputs(translation=Kind.TEXT),
        memory_inputs=("text",),
        description="Translate text (NLLB).",
    ),
    TaskSpec(
        name="embed",
        specialisation="clip",
        inputs={
            "images": Field(Kind.IMAGE, "Images to embed (CLIP).", default=(), many=True, max_items=_MANY),
            "texts": Field(Kind.TEXT, "Texts to embed, in the space of the images or sounds.", default=(),
                           many=True, max_items=_MANY),
            "sounds": Field(Kind.AUDIO, f"{_SOUNDS} (CLAP); never with images.", default=(), many=True,
                            max_items=_MANY),
            "space": _SPACE,
        },
        outputs=outputs(image_embeddings=Kind.EMBEDDING, text_embeddings=Kind.EMBEDDING,
                        sound_embeddings=Kind.EMBEDDING, space=Kind.TEXT),
        memory_inputs=("images", "texts", "sounds"),
        description="Embeddings (L2-normalised) in one space: images and texts with CLIP, or sounds and "
                    "texts with CLAP; `space` names it (e.g. clap:laion/clap-htsat-unfused). Images and "
                    "sounds share no space and are refused together.",
        one_of=("images", "texts", "sounds"),
        check=space_of,
    ),
    TaskSpec(
        name="rank",
        specialisation="clip",
        inputs={
            "query": Field(Kind.TEXT, "What to look for.", max_length=1000),
            "images": Field(Kind.IMAGE, "Candidate images (CLIP).", default=(), many=True, max_items=_MANY),
            "texts": Field(Kind.TEXT, "Candidate texts.", default=(), many=True, max_items=_MANY),
            "sounds": Field(Kind.AUDIO, f"Candidate sounds: {_SOUNDS} (CLAP); never with images.", default=(),
                            many=True, max_items=_MANY),
            "space": _SPACE,
        },
        outputs=outputs(ranking=Kind.JSON, space=Kind.TEXT),
        memory_inputs=("images", "texts", "sounds"),
        description="Order candidates by similarity to a text query, in one space: images and texts with "
                    "CLIP, or sounds and texts with CLAP (the query read by CLAP's text tower): "
                    "[{kind: image|text|sound, index, score}], best first.",
        one_of=("images", "texts", "sounds"),
        check=space_of,
    ),
    TaskSpec(
        name="embed_text",
        specialisation="sentence",
        inputs={"texts": Field(Kind.TEXT, "Texts to embed.", many=True, max_items=_MANY)},
        outputs=outputs(embeddings=Kind.EMBEDDING),
        memory_inputs=("texts",),
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
        memory_inputs=("texts",),
        description=f"Order texts by sentence-embedding similarity to a query: {_RANKING}.",
    ),
    TaskSpec(
        name="rank_embeddings",
        specialisation="clip",
        inputs={
            "query": Field(Kind.EMBEDDING, "The query's embedding (its first row is used)."),
            "candidates": Field(Kind.EMBEDDING, "Candidate embeddings; every row is one candidate.",
                                many=True, max_items=4096),
            "query_space": Field(Kind.TEXT, "The query's space (embed's `space` output); with "
                                 "candidate_spaces, a candidate of another space is refused.", default="",
                                 max_length=1000),
            "candidate_spaces": Field(Kind.TEXT, "The candidates' spaces (embed's `space` outputs).",
                                      default=(), many=True, max_items=4096),
        },
        outputs=outputs(ranking=Kind.JSON),
        memory_inputs=("candidates",),
        description="Order precomputed embeddings by cosine similarity to a query embedding: "
                    "[{index, score}], best first. Given the spaces, one of another space is refused.",
        check=same_space,
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
        memory_inputs=("max_frames",),
        description="Frames sampled every interval_s seconds (PNG) and the audio track (16 kHz mono WAV; "
                    "silence when the video has none).",
    ),
    TaskSpec(
        name="slideshow",
        specialisation="media",
        inputs={
            "images": Field(Kind.IMAGE, "The pictures, in order; each is scaled to fit the first one's size.",
                            many=True, max_items=_MANY),
            "seconds_per_image": Field(Kind.NUMBER, "How long each picture is shown.", default=2.0,
                                       minimum=0.1, maximum=60),
            "fps": Field(Kind.INTEGER, "Frames per second of the video.", default=8, minimum=1, maximum=60),
        },
        outputs=outputs(video=Kind.VIDEO),
        memory_inputs=("images",),
        description="A video (MP4, H.264) that shows the images one after the other.",
    ),
    TaskSpec(
        name="answer",
        specialisation="vqa",
        inputs={
            "image": Field(Kind.IMAGE, "The image the question is about."),
            "question": Field(Kind.TEXT, "The question, in plain words.", max_length=2000),
            "max_new_tokens": Field(Kind.INTEGER, "Longest answer, in tokens.", default=64, minimum=1,
                                    maximum=512),
        },
        outputs=outputs(answer=Kind.TEXT),
        memory_inputs=("image", "max_new_tokens"),
        description="Answer a question about an image (LLaVA or BLIP-2 family).",
    ),
    TaskSpec(
        name="describe",
        specialisation="vqa",
        inputs={
            "image": Field(Kind.IMAGE, "The image to describe."),
            "max_new_tokens": Field(Kind.INTEGER, "Longest description, in tokens.", default=256, minimum=1,
                                    maximum=1024),
        },
        outputs=outputs(description=Kind.TEXT),
        memory_inputs=("image", "max_new_tokens"),
        description="Describe an image at length: what it shows, where, and how (LLaVA or BLIP-2 family).",
    ),
    TaskSpec(
        name="depth",
        specialisation="depth",
        inputs={"image": Field(Kind.IMAGE, "The image to estimate depth for.")},
        outputs=outputs(depth_map=Kind.IMAGE, depth=Kind.ARRAY),
        memory_inputs=("image",),
        description="Monocular depth (Depth Anything or DPT): a greyscale depth map (near is bright) and the "
                    "raw float32 array at the image's size (.npy; relative depth, larger is nearer).",
    ),
    TaskSpec(
        name="segment",
        specialisation="segment",
        inputs={
            "image": Field(Kind.IMAGE, "The image to cut objects out of."),
            "points": Field(Kind.NUMBER, "Points [x, y] in pixels on the object; together they prompt one "
                            "mask.", default=(), many=True, max_items=64, size=2, minimum=0),
            "point_labels": Field(Kind.INTEGER, "One per point: 1 on the object, 0 on the background "
                                  "(default: all 1).", default=(), many=True, max_items=64, minimum=0,
                                  maximum=1),
            "boxes": Field(Kind.NUMBER, "Boxes [x0, y0, x1, y1] in pixels; one mask each (the points, if "
                           "any, refine every box).", default=(), many=True, max_items=16, size=4,
                           minimum=0),
        },
        outputs=outputs(masks=Output(Kind.IMAGE, many=True), scores=Kind.JSON),
        memory_inputs=("image", "boxes"),
        description="Masks of the objects that points or boxes pick out (Segment Anything): one black and "
                    "white PNG per box (or one for the points), with the model's predicted IoU for each.",
        one_of=("points", "boxes"),
    ),
    TaskSpec(
        name="features",
        specialisation="features",
        inputs={"images": Field(Kind.IMAGE, "Images to embed.", many=True, max_items=_MANY)},
        outputs=outputs(embeddings=Kind.EMBEDDING),
        memory_inputs=("images",),
        description="DINOv2 image features: one L2-normalised row per image (the class token), for "
                    "similarity, retrieval and clustering.",
    ),
    TaskSpec(
        name="speak",
        specialisation="speak",
        inputs={
            "text": Field(Kind.TEXT, "What to say; long text is spoken sentence by sentence.",
                          max_length=5000),
            "seed": Field(Kind.INTEGER, "Random seed; the same text and seed give the same voice.", default=0,
                          minimum=0, maximum=2**32 - 1),
        },
        outputs=outputs(audio=Kind.AUDIO),
        memory_inputs=("text",),
        description="Text to speech (VITS / MMS-TTS): a mono WAV.",
    ),
    TaskSpec(
        name="compose",
        specialisation="compose",
        inputs={
            "prompt": Field(Kind.TEXT, "The sound or music to make.", max_length=1000),
            "duration_s": Field(Kind.NUMBER, "Length of the audio, in seconds.", default=5.0, minimum=0.5,
                                maximum=30),
            "guidance": Field(Kind.NUMBER, "Classifier-free guidance scale.", default=3.0, minimum=1,
                              maximum=20),
            "seed": Field(Kind.INTEGER, "Random seed; the same inputs give the same audio.", default=0,
                          minimum=0, maximum=2**32 - 1),
        },
        outputs=outputs(audio=Kind.AUDIO),
        memory_inputs=("duration_s",),
        description="Text to music and sound (MusicGen): a mono WAV.",
    ),
    TaskSpec(
        name="text2video",
        specialisation="text2video",
        inputs={
            "prompt": Field(Kind.TEXT, "What happens in the video.", max_length=2000),
            "negative_prompt": TEXT2IMAGE_OPTIONS["negative_prompt"],
            "steps": Field(Kind.INTEGER, "Denoising steps.", default=25, minimum=1, maximum=100),
            "guidance": Field(Kind.NUMBER, "Classifier-free guidance scale.", default=9.0, minimum=0,
                              maximum=30),
            "seed": TEXT2IMAGE_OPTIONS["seed"],
            "num_frames": Field(Kind.INTEGER, "Frames to generate.", default=16, minimum=1, maximum=64),
            "fps": Field(Kind.INTEGER, "Frames per second of the video.", default=8, minimum=1, maximum=30),
            "width": Field(Kind.INTEGER, "Frame width in pixels.", default=256, minimum=64, maximum=1024,
                           multiple_of=8),
            "height": Field(Kind.INTEGER, "Frame height in pixels.", default=256, minimum=64, maximum=1024,
                            multiple_of=8),
        },
        outputs=outputs(video=Kind.VIDEO),
        memory_inputs=("num_frames", "width", "height"),
        description="Generate a short video from a prompt (a diffusers text-to-video pipeline): MP4, H.264.",
    ),
    TaskSpec(
        name="text2mesh",
        specialisation="text2mesh",
        inputs={
            "prompt": Field(Kind.TEXT, "The object to make.", max_length=1000),
            "steps": Field(Kind.INTEGER, "Denoising steps.", default=64, minimum=1, maximum=256),
            "guidance": Field(Kind.NUMBER, "Classifier-free guidance scale.", default=15.0, minimum=0,
                              maximum=50),
            "seed": TEXT2IMAGE_OPTIONS["seed"],
            "preview_size": Field(Kind.INTEGER, "Width and height of the preview image, in pixels.",
                                  default=256, minimum=32, maximum=1024),
            # 128 is Shap-E's own; time and memory grow with its cube (~1.5 GB at 128).
            "grid_size": Field(Kind.INTEGER, "Marching-cubes grid points per side: the mesh's detail.",
                               default=128, minimum=16, maximum=128),
        },
        outputs=outputs(mesh=Kind.MESH, preview=Kind.IMAGE),
        memory_inputs=("grid_size", "preview_size"),
        description="A 3D object from a prompt (Shap-E): a coloured mesh (PLY) and a rendered preview image.",
    ),
    *LANGUAGE_MODEL_TASKS,
)

