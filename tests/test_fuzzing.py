"""Fuzzing the input decoders and the submission schema: no worker crash, every failure a typed error.

In process, hypothesis feeds the real decoders random bytes and mutated real files: Pillow through
`decode_image`, PyAV through `decode_audio` and through the media specialisation's own `run` of
`extract` (the bytes handed in as its artifact input). It feeds every task's and built-in pipeline's
input schema random JSON-like inputs, `Field.parse` random command-line text, and
`pipeline_from_dict` random, grammar-shaped and mutated pipeline specs (JSON, and YAML files whose
keys need not be text). Each must return a value or raise mmq's typed error (`InvalidInput` naming
the input; `InvalidPipeline` for a spec): never a bare ValueError, KeyError, or a library's own.
Examples are derandomized: CI sees the same ones on every run.

Through real worker processes, on the session stack (a real redis-server, a real SeaweedFS S3
server, real Celery workers with tiny randomly initialised models of the real architectures),
fuzzed images go to `caption`, audio to `transcribe`, video to `extract`. Each is refused at
submission with `InvalidInput`, or its job ends, succeeded or failed with a typed error; then a good
job succeeds on the same worker processes, none restarted. Faked: the model hub (tiny models built
locally) and the GPU (the workers run on the CPU).
"""

from __future__ import annotations

import copy
import functools
import io
import math
import random
import time
import wave
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import av
import numpy as np
import psutil
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmq.tasks import PIPELINES, TASKS, ArtifactRef, Field, InvalidInput, InvalidPipeline, JobStatus, Kind
from mmq.tasks import JobTimeout, Pipeline, Settings
from mmq.tasks.media_types import EXTENSIONS, sniff_media_type
from mmq.tasks.specfiles import load_pipeline_file, pipeline_from_dict, pipeline_to_dict
from mmq.workers import ArtifactInput, ModelContext
from mmq.workers.audio import decode_audio
from mmq.workers.image_codec import decode_image
from mmq.workers.video import MediaSpecialisation

from .media_samples import make_video

# All of it is reliability (`make reliability` runs it whole): the figure, recorded by the last test,
# counts the in-process examples run before it. Pillow warns of each corrupt EXIF block it skips.
pytestmark = [pytest.mark.reliability, pytest.mark.filterwarnings("ignore::UserWarning:PIL")]

# The typed errors a bad input may end in: InvalidInput and its subclasses, by name as records hold them.
TYPED = frozenset(cls.__name__ for cls in (InvalidInput, *InvalidInput.__subclasses__()))
MAX_PIXELS = 1_000_000  # in process; the workers keep their default (MMQ_MAX_IMAGE_PIXELS)
MAX_AUDIO_S = 60  # in process, so a lying header costs little; the workers keep MMQ_MAX_AUDIO_S
EXAMPLES: Counter[str] = Counter()  # in-process examples run, for the figure


def fuzz(examples: int) -> settings:
    """Hypothesis settings: reproducible examples, no example database, no timing limits."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# --- real media, made here ----------------------------------------------------------------------

def saved(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@functools.cache
def image_seeds() -> dict[str, bytes]:
    """A 24x16 gradient in every format the client sniffs as an image, and TIFF, which Pillow opens too."""
    y, x = np.mgrid[0:16, 0:24]
    image = Image.fromarray(np.stack([x * 10, y * 15, (x + y) * 6], axis=-1).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation "rotated": decoding runs exif_transpose over the EXIF block
    return {"png": saved(image, "PNG"), "png-palette": saved(image.convert("P"), "PNG", transparency=0),
            "jpeg-exif": saved(image, "JPEG", quality=80, exif=exif.tobytes()),
            "gif": saved(image.convert("P"), "GIF"), "bmp": saved(image, "BMP"), "webp": saved(image, "WEBP"),
            "tiff": saved(image, "TIFF")}


def tone(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def wav_bytes(*, rate: int, channels: int, seconds: float) -> bytes:
    """A 16-bit PCM WAV of a 440 Hz tone, written by the standard library."""
    pcm = np.repeat((tone(rate, seconds) * 32767).astype("<i2")[:, None], channels, axis=1)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def encoded(container: str, codec: str, *, rate: int, seconds: float) -> bytes:
    """A mono tone compressed with PyAV (FLAC, MP3)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(tone(rate, seconds)[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            out.mux(stream.encode(piece))
        out.mux(stream.encode(None))
    return buffer.getvalue()


@functools.cache
def audio_seeds() -> dict[str, bytes]:
    return {"wav-mono-8k": wav_bytes(rate=8000, channels=1, seconds=0.3),
            "wav-stereo-22k": wav_bytes(rate=22050, channels=2, seconds=0.2),
            "flac": encoded("flac", "flac", rate=16000, seconds=0.3),
            "mp3": encoded("mp3", "libmp3lame", rate=22050, seconds=0.3)}


@functools.cache
def video_seeds() -> dict[str, bytes]:
    return {"mp4-sound": make_video(seconds=1.0, fps=4, size=(32, 24)),
            "mp4-silent": make_video(seconds=1.0, fps=4, size=(32, 24), with_audio=False)}


# Starts of files that Pillow or FFmpeg recognise, so random bytes after them reach the parsers.
IMAGE_MAGICS = (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
                b"II*\x00", b"MM\x00*", b"P6\n", b"\x00\x00\x01\x00", b"8BPS", b"icns", b"DDS ", b"qoif")
AUDIO_MAGICS = (b"", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"fLaC", b"OggS\x00\x02", b"ID3\x03\x00", b"\xff\xfb",
                b"\x00\x00\x00\x20ftypM4A ")
VIDEO_MAGICS = (b"", b"\x00\x00\x00\x18ftypisom", b"\x1a\x45\xdf\xa3", b"RIFF\x00\x00\x00\x00AVI LIST")


def magic_bytes(magics: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    return st.tuples(st.sampled_from(magics), st.binary(max_size=1024)).map(b"".join)


# --- mutations: one edit language for hypothesis and for the seeded loop through the workers ------

EDIT_OPS = ("flip", "truncate", "insert", "overwrite", "delete")
Edit = tuple[str, int, bytes]  # what, where (wrapped to the length), which bytes

# Positions wrap around the length: a third in the first 64 bytes and a third in the last 512, where
# the headers are (an MP4's index comes last), a third anywhere.
POSITIONS = st.integers(0, 63) | st.integers(-512, -1) | st.integers(0, 1 << 20)
EDITS = st.lists(st.tuples(st.sampled_from(EDIT_OPS), POSITIONS, st.binary(min_size=1, max_size=16)),
                 min_size=1, max_size=4)


def mutate(data: bytes, edits: Sequence[Edit]) -> bytes:
    for op, at, chunk in edits:
        at %= len(data) + 1
        if op == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ (chunk[0] or 0xFF)]) + data[at + 1:]
        elif op == "truncate":
            data = data[:at]
        elif op == "insert":
            data = data[:at] + chunk + data[at:]
        elif op == "overwrite":
            data = data[:at] + chunk + data[at + len(chunk):]
        elif op == "delete":
            data = data[:at] + data[at + len(chunk):]
    return data


def random_edits(rng: random.Random) -> list[Edit]:
    """Edits drawn as EDITS draws them, from a seeded generator."""
    def position() -> int:
        return rng.choice((rng.randrange(64), rng.randrange(-512, 0), rng.randrange(1 << 20)))

    return [(rng.choice(EDIT_OPS), position(), rng.randbytes(rng.randint(1, 16)))
            for _ in range(rng.randint(1, 4))]


# --- the decoders, in process -------------------------------------------------------------------

def decoded_image_or_invalid(data: bytes) -> None:
    EXAMPLES["image"] += 1
    try:
        image = decode_image(data, field="image", max_pixels=MAX_PIXELS)
    except InvalidInput as exc:
        assert exc.field == "image", exc
        return
    assert image.mode == "RGB" and image.width * image.height <= MAX_PIXELS
    assert image.width > 0 and image.height > 0, f"decode_image returned an empty {image.size} image"


def decoded_audio_or_invalid(data: bytes) -> None:
    EXAMPLES["audio"] += 1
    try:
        samples = decode_audio(data, field="audio", max_duration_s=MAX_AUDIO_S)
    except InvalidInput as exc:
        assert exc.field == "audio", exc
        return
    assert samples.dtype == np.float32 and samples.ndim == 1 and 0 < samples.size <= MAX_AUDIO_S * 16_000


@functools.cache
def media_worker() -> MediaSpecialisation:
    """The media specialisation as a worker builds it (it loads no model)."""
    media = MediaSpecialisation(ModelContext(model="", device="cpu", cache_dir=Path("."),
                                             settings=Settings(max_audio_s=MAX_AUDIO_S)))
    media.setup()
    return media


def extracted_or_invalid(data: bytes) -> None:
    EXAMPLES["video"] += 1
    video = ArtifactInput(media_type="video/mp4", sha256="", size=len(data), fetch=lambda: data)
    try:
        [outputs] = media_worker().run("extract", [{"video": video, "interval_s": 0.5, "max_frames": 4}],
                                       lambda done, total: None)
    except InvalidInput as exc:
        assert exc.field == "video", exc
        return
    # What a downstream step relies on: frames that decode as PNG pictures of one size (a caption
    # step reads each), a real duration, and sound that reads as 16 kHz mono 16-bit WAV (speech
    # recognition reads it).
    sizes = set()
    for frame in outputs["frames"]:
        assert frame.media_type == "image/png"
        with Image.open(io.BytesIO(frame.data)) as picture:
            picture.load()
            sizes.add(picture.size)
    assert len(sizes) == 1 and min(next(iter(sizes))) > 0, sizes
    assert math.isfinite(outputs["duration_s"]), outputs
    assert outputs["audio"].media_type == "audio/wav"
    with wave.open(io.BytesIO(outputs["audio"].data)) as sound:
        assert (sound.getframerate(), sound.getnchannels(), sound.getsampwidth()) == (16_000, 1, 2)


@fuzz(200)
@given(data=magic_bytes(IMAGE_MAGICS + AUDIO_MAGICS + VIDEO_MAGICS))
def test_sniffing_names_a_known_media_type_for_any_bytes(data):
    EXAMPLES["sniff"] += 1
    assert sniff_media_type(data) in {*EXTENSIONS, "application/octet-stream"}


@fuzz(200)
@given(data=magic_bytes(IMAGE_MAGICS))
def test_random_bytes_decode_to_an_image_or_invalid_input(data):
    decoded_image_or_invalid(data)


@fuzz(500)
@given(seed=st.sampled_from(sorted(image_seeds())), edits=EDITS)
def test_a_mutated_real_image_decodes_or_is_invalid_input(seed, edits):
    decoded_image_or_invalid(mutate(image_seeds()[seed], edits))


@fuzz(150)
@given(data=magic_bytes(AUDIO_MAGICS))
def test_random_bytes_decode_to_audio_or_invalid_input(data):
    decoded_audio_or_invalid(data)


@fuzz(300)
@given(seed=st.sampled_from(sorted(audio_seeds())), edits=EDITS)
def test_mutated_real_audio_decodes_or_is_invalid_input(seed, edits):
    decoded_audio_or_invalid(mutate(audio_seeds()[seed], edits))


@fuzz(100)
@given(data=magic_bytes(VIDEO_MAGICS))
def test_random_bytes_give_frames_or_invalid_input(data):
    extracted_or_invalid(data)


# Found by this fuzzer (and pinned): the first entry of a silent MP4's time-to-sample table (stts) made
# to claim 0xde285376 samples of a negative delta, so the video stream's duration is negative.
STTS_ENTRY = video_seeds()["mp4-silent"].find(b"stts") + 12
NEGATIVE_DURATION = ("overwrite", STTS_ENTRY, b"\xde(Sv\xc8\xc1\x9e\x00")


@fuzz(300)
@given(seed=st.sampled_from(sorted(video_seeds())), edits=EDITS)
@example(seed="mp4-silent", edits=[NEGATIVE_DURATION])
def test_a_mutated_real_video_gives_frames_or_invalid_input(seed, edits):
    extracted_or_invalid(mutate(video_seeds()[seed], edits))


# --- the submission schema ----------------------------------------------------------------------

# Numbers at the edges, beside what st.floats and st.integers draw: JSON parsers in Python accept
# NaN and Infinity, and clients send whatever they like.
EDGE_NUMBERS = st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0, 1, -1, 0.5, 2**53 + 1, 2**64, -2**64,
                                1e308, 5e-324, True, False])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | EDGE_NUMBERS | st.text(max_size=12)
JSON_LIKE = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
MEDIA_TYPES = st.sampled_from(sorted(EXTENSIONS)) | st.text(max_size=12)
# References to artifacts as JSON carries them, well-formed or not, and as the SDK passes them.
REF_LIKE = st.fixed_dictionaries(
    {"uri": st.sampled_from(["s3://bucket/blobs/a.png", "s3://bucket", "https://x/y"]) | JSON_LIKE,
     "media_type": MEDIA_TYPES | JSON_LIKE, "sha256": st.text(max_size=8) | JSON_LIKE,
     "size": EDGE_NUMBERS | st.integers() | st.text(max_size=6) | JSON_LIKE}, optional={"extra": JSON_LIKE})
REFS = REF_LIKE | st.builds(ArtifactRef, uri=st.sampled_from(["s3://bucket/blobs/a.png", "s3://x"]),
                            media_type=MEDIA_TYPES, sha256=st.text(max_size=4), size=st.integers())
ONE_OF_KIND = {
    Kind.TEXT: st.text(max_size=40),
    Kind.INTEGER: st.integers() | EDGE_NUMBERS | st.floats(),
    Kind.NUMBER: st.floats() | EDGE_NUMBERS | st.integers(),
    Kind.IMAGE: REFS, Kind.AUDIO: REFS, Kind.VIDEO: REFS,
    Kind.EMBEDDING: st.lists(st.lists(st.floats() | st.integers() | SCALARS, max_size=3), max_size=3) | REFS,
    Kind.JSON: JSON_LIKE,
}


def values_for(spec: Field) -> st.SearchStrategy[Any]:
    """Values of the field's kind (and near its length limit), or anything JSON can carry."""
    one = ONE_OF_KIND[spec.kind]
    if isinstance(spec.max_length, int) and 0 <= spec.max_length <= 200_000:
        one |= st.integers(max(0, spec.max_length - 2), spec.max_length + 2).map(lambda n: "a" * n)
    one |= JSON_LIKE
    return st.lists(one, max_size=4) | one if spec.many else one


def _number(value: Any) -> float | None:
    finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if finite else None


def valid_values(spec: Field) -> st.SearchStrategy[Any]:
    """Values the field should accept (as far as its declaration makes sense): the inputs before the
    one that is off must pass, for the check to reach it."""
    low, high = _number(spec.minimum), _number(spec.maximum)
    low = -1000 if low is None else low
    high = low + 1000 if high is None or high < low else high
    if spec.kind.is_artifact:
        one = st.builds(ArtifactRef, uri=st.just("s3://bucket/blobs/x"),
                        media_type=st.just(f"{spec.kind.value}/x"), sha256=st.just("0" * 64),
                        size=st.integers(0, 10**6))
    else:
        one = {
            Kind.TEXT: st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=20),
            Kind.INTEGER: st.integers(math.ceil(low), max(math.ceil(low), math.floor(high))),
            Kind.NUMBER: st.floats(low, high),
            Kind.EMBEDDING: st.lists(st.lists(st.floats(-1, 1), min_size=1, max_size=3), min_size=1,
                                     max_size=3),
            Kind.JSON: JSON_LIKE,
        }[spec.kind]
    return st.lists(one, min_size=1, max_size=3) if spec.many else one


def inputs_for(schema: Mapping[str, Field]) -> st.SearchStrategy[dict[Any, Any]]:
    """Inputs: each of the schema's own valid, or valid or not, or anything under its names or any names."""
    def under_its_names(values: Callable[[Field], st.SearchStrategy[Any]]) -> st.SearchStrategy[dict]:
        return st.fixed_dictionaries({n: values(f) for n, f in schema.items() if f.required},
                                     optional={n: values(f) for n, f in schema.items() if not f.required})

    names = sorted(schema, key=repr)
    keys = (st.sampled_from(names) | st.text(max_size=10)) if names else st.text(max_size=10)
    return (under_its_names(valid_values) | under_its_names(lambda f: valid_values(f) | values_for(f))
            | st.fixed_dictionaries({}, optional={n: values_for(f) for n, f in schema.items()})
            | st.dictionaries(keys, JSON_LIKE, max_size=5))


def checked_or_invalid(schema: Any, inputs: Mapping[str, Any], where: str) -> None:
    try:
        checked = schema.check_inputs(inputs, where=where)
    except InvalidInput as exc:
        assert exc.field is not None, f"{exc!r} names no input"
        return
    assert isinstance(checked, dict) and set(checked) == set(schema.inputs)


@fuzz(300)
@given(kind=st.sampled_from([Kind.IMAGE, Kind.AUDIO, Kind.VIDEO, Kind.EMBEDDING]), value=REF_LIKE)
def test_an_artifact_reference_of_any_shape_is_checked_or_invalid_input(kind, value):
    EXAMPLES["artifact reference"] += 1
    try:
        checked = Field(kind).check("file", value)
    except InvalidInput as exc:
        assert exc.field == "file", exc
        return
    assert isinstance(checked, ArtifactRef) and kind.accepts(checked.media_type)


SCHEMAS = {**{f"task {n}": t for n, t in TASKS.items()}, **{f"pipeline {n}": p for n, p in PIPELINES.items()}}


@pytest.mark.parametrize("where", sorted(SCHEMAS))
@fuzz(40)
@given(data=st.data())
def test_every_input_schema_checks_any_inputs_or_raises_invalid_input(where, data):
    EXAMPLES["schema"] += 1
    schema = SCHEMAS[where]
    checked_or_invalid(schema, data.draw(inputs_for(schema.inputs), label="inputs"), where)


FIELDS = sorted(((f"{t}.{name}", spec) for t, task in TASKS.items() for name, spec in task.inputs.items()),
                key=lambda item: item[0])
NUMBERS = [(name, spec) for name, spec in FIELDS if spec.kind in (Kind.INTEGER, Kind.NUMBER)]


@fuzz(200)
@given(item=st.sampled_from(FIELDS),
       raw=st.text(max_size=20) | st.from_regex(r"-?\d{1,40}(\.\d*)?(e-?\d{1,3})?", fullmatch=True)
       | st.sampled_from(["nan", "inf", "-inf", "1e400", "1_000", " 8 ", "0x10", "", "@x.png"]))
def test_every_input_parses_any_command_line_text_or_raises_invalid_input(item, raw):
    EXAMPLES["parse"] += 1
    name, spec = item
    try:
        spec.parse(name, raw)
    except InvalidInput as exc:
        assert exc.field == name, exc


@pytest.mark.parametrize("name, spec", NUMBERS, ids=[name for name, _ in NUMBERS])
@fuzz(25)
@given(value=EDGE_NUMBERS | st.floats() | st.integers())
def test_a_number_an_input_accepts_is_finite_and_within_its_bounds(name, spec, value):
    EXAMPLES["bounds"] += 1
    try:
        checked = spec.check(name, value)
    except InvalidInput:
        return
    assert math.isfinite(checked), f"{name} accepted {checked!r}: the job gets a value that no bound holds"
    assert spec.minimum is None or checked >= spec.minimum
    assert spec.maximum is None or checked <= spec.maximum


# --- pipeline specs -----------------------------------------------------------------------------

INPUT_NAMES = sorted({name for task in TASKS.values() for name in task.inputs})
TEXT_TOKENS = [*(k.value for k in Kind), *TASKS, *(f"input.{n}" for n in INPUT_NAMES), "input", "", "a.b",
               *sorted({f"{t}.{o}" for t, task in TASKS.items() for o in task.outputs})]
TOKENS = (st.sampled_from(TEXT_TOKENS) | st.sampled_from([0, -1, 1, 2**64, 0.5, math.nan, True, False, None])
          | st.builds(list) | st.builds(dict))
FIELD_KEYS = [f.name for f in fields(Field)]
FIELD_SPECS = st.fixed_dictionaries({"kind": st.sampled_from([k.value for k in Kind]) | JSON_LIKE},
                                    optional={key: TOKENS | JSON_LIKE for key in FIELD_KEYS if key != "kind"})
BINDINGS = st.sampled_from(TEXT_TOKENS) | st.fixed_dictionaries({"format": st.text(max_size=30)}) | JSON_LIKE
STEP_SPECS = st.fixed_dictionaries(
    {"name": st.sampled_from([*TASKS, "a", "input"]) | st.text(max_size=8),
     "task": st.sampled_from(sorted(TASKS)) | st.text(max_size=8)},
    optional={"bind": st.dictionaries(st.sampled_from(INPUT_NAMES) | st.text(max_size=6), BINDINGS,
                                      max_size=4),
              "each": st.dictionaries(st.sampled_from(INPUT_NAMES), st.sampled_from(TEXT_TOKENS) | JSON_LIKE,
                                      max_size=2)})
# Shaped like a spec (name, inputs, steps, outputs), with every part drawn loosely.
SHAPED_SPECS = st.fixed_dictionaries(
    {"name": st.text(max_size=8), "steps": st.lists(STEP_SPECS, min_size=1, max_size=3)},
    optional={"inputs": st.dictionaries(st.sampled_from(INPUT_NAMES) | st.text(max_size=6), FIELD_SPECS,
                                        max_size=3),
              "outputs": st.dictionaries(st.text(max_size=6), st.sampled_from(TEXT_TOKENS) | JSON_LIKE,
                                         max_size=3),
              "description": JSON_LIKE})
SPEC_KEYS = st.sampled_from(["name", "description", "inputs", "steps", "outputs"]) | st.text(max_size=8)
ANY_SPECS = JSON_LIKE | st.dictionaries(SPEC_KEYS, JSON_LIKE, max_size=6)
BUILTIN_SPECS = [pipeline_to_dict(p) for p in PIPELINES.values()]


def nodes(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path to every node of a JSON-like tree, the root's first."""
    found = [path]
    children = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, child in children:
        found += nodes(child, (*path, key))
    return found


def mutated_specs(keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A built-in pipeline's JSON form with 1-3 nodes replaced, deleted, renamed (to one of `keys`) or
    duplicated."""

    @st.composite
    def mutated(draw: Callable[..., Any]) -> Any:
        spec = copy.deepcopy(draw(st.sampled_from(BUILTIN_SPECS)))
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(nodes(spec)[1:]))
            parent, key = functools.reduce(lambda node, k: node[k], path[:-1], spec), path[-1]
            op = draw(st.sampled_from(("replace", "token", "delete", "rename", "duplicate")))
            if op == "replace":
                parent[key] = draw(JSON_LIKE)
            elif op == "token":
                parent[key] = draw(TOKENS)
            elif op == "delete":
                del parent[key]
            elif isinstance(parent, list):  # rename or duplicate an item: duplicate it
                parent.insert(key, copy.deepcopy(parent[key]))
            else:
                value = parent[key] if op == "duplicate" else parent.pop(key)
                parent[draw(keys)] = copy.deepcopy(value)
        return spec

    return mutated()


@st.composite
def redeclared_specs(draw: Callable[..., Any]) -> dict[str, Any]:
    """A built-in pipeline's JSON form with 1-2 keys of its inputs' declarations (a bound, a default, a
    length, `many`) set to any value: the steps stay wired, so the spec may well be accepted."""
    spec = copy.deepcopy(draw(st.sampled_from(BUILTIN_SPECS)))
    for _ in range(draw(st.integers(1, 2))):
        declared = spec["inputs"][draw(st.sampled_from(sorted(spec["inputs"])))]
        declared[draw(st.sampled_from(FIELD_KEYS))] = draw(TOKENS | JSON_LIKE)
    return spec


def pipeline_or_invalid(spec: Any) -> Pipeline | None:
    EXAMPLES["pipeline spec"] += 1
    try:
        pipeline = pipeline_from_dict(spec, TASKS)
    except InvalidPipeline:
        return None
    assert isinstance(pipeline, Pipeline)
    return pipeline


def submittable_or_invalid(spec: Any, data: st.DataObject) -> None:
    """A spec is refused, or the pipeline it defines checks the inputs of a submission typed too."""
    pipeline = pipeline_or_invalid(spec)
    if pipeline is not None:
        inputs = data.draw(inputs_for(pipeline.inputs), label="inputs")
        checked_or_invalid(pipeline, inputs, f"pipeline {pipeline.name!r}")


def test_the_built_in_pipelines_read_back_from_their_json_form():
    # Given the JSON form of each built-in pipeline, when it is read, then it defines the same pipeline:
    # the mutations below start from valid specs.
    for spec, pipeline in zip(BUILTIN_SPECS, PIPELINES.values(), strict=True):
        assert pipeline_from_dict(spec, TASKS).describe() == pipeline.describe()


@fuzz(200)
@given(spec=ANY_SPECS, data=st.data())
def test_any_json_is_a_pipeline_or_invalid_pipeline(spec, data):
    submittable_or_invalid(spec, data)


@fuzz(200)
@given(spec=SHAPED_SPECS, data=st.data())
def test_a_spec_shaped_json_is_a_pipeline_or_invalid_pipeline(spec, data):
    submittable_or_invalid(spec, data)


@fuzz(300)
@given(spec=mutated_specs(st.sampled_from(TEXT_TOKENS) | st.text(max_size=8)), data=st.data())
def test_a_mutated_built_in_spec_is_a_pipeline_or_invalid_pipeline(spec, data):
    submittable_or_invalid(spec, data)


@fuzz(200)
@given(spec=redeclared_specs(), data=st.data())
def test_a_built_in_spec_with_its_inputs_redeclared_is_a_pipeline_or_invalid_pipeline(spec, data):
    submittable_or_invalid(spec, data)


# YAML keys are whatever YAML 1.1 reads: `1:`, `yes:`, `on:` and `null:` are not text.
YAML_KEYS = st.text(max_size=6) | st.integers(-2, 2) | st.booleans() | st.none()


@fuzz(150)
@given(spec=mutated_specs(YAML_KEYS))
def test_a_yaml_pipeline_file_with_keys_of_any_type_is_a_pipeline_or_invalid_pipeline(spec, tmp_path_factory):
    EXAMPLES["pipeline spec"] += 1
    path = tmp_path_factory.getbasetemp() / "fuzzed-pipeline.yaml"  # one file, rewritten per example
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    try:
        assert isinstance(load_pipeline_file(path, TASKS), Pipeline)
    except InvalidPipeline:
        pass


# --- through real workers -----------------------------------------------------------------------

SEED = 20261130
JOBS_PER_KIND = 12
WAIT_S = 300  # for all the fuzzed jobs together


@dataclass(frozen=True)
class Target:
    """A task whose worker decodes one file input, and the media it is fuzzed with."""

    task: str
    input: str
    specialisation: str
    seeds: Callable[[], dict[str, bytes]]
    signature: bytes  # a start the client sniffs as this kind, so random bytes after it reach the worker
    options: Mapping[str, Any] = field(default_factory=dict)


TARGETS = (
    Target("caption", "image", "caption", image_seeds, b"\x89PNG\r\n\x1a\n"),
    Target("transcribe", "audio", "speech", audio_seeds, b"RIFF\x24\x00\x00\x00WAVEfmt "),
    Target("extract", "video", "media", video_seeds, b"\x00\x00\x00\x18ftypisom",
           {"interval_s": 0.5, "max_frames": 4}),
)


@dataclass(frozen=True)
class Fuzzed:
    target: Target
    how: str  # how the bytes were made: with SEED, enough to make them again
    data: bytes


def pinned(target: Target) -> list[Fuzzed]:
    """Inputs the in-process fuzzers found to fail untyped, sent through the real worker too."""
    if target.task != "extract":
        return []
    return [Fuzzed(target, f"mp4-silent with edits {[NEGATIVE_DURATION]} (a negative duration)",
                   mutate(video_seeds()["mp4-silent"], [NEGATIVE_DURATION]))]


def fuzzed_files(target: Target, rng: random.Random) -> list[Fuzzed]:
    made = [Fuzzed(target, "random bytes", rng.randbytes(rng.randrange(512))),
            Fuzzed(target, f"{target.signature!r} + random bytes",
                   target.signature + rng.randbytes(rng.randrange(512))),
            *pinned(target)]
    seeds = target.seeds()
    names = sorted(seeds)
    while len(made) < JOBS_PER_KIND:
        name, edits = names[len(made) % len(names)], random_edits(rng)
        made.append(Fuzzed(target, f"{name} with edits {edits}", mutate(seeds[name], edits)))
    return made


def submitted(client: Any, fuzzed: Fuzzed) -> Any:
    """The job, or None when the client refused the file at submission (with InvalidInput naming it)."""
    target = fuzzed.target
    try:
        return client.submit(target.task, **{target.input: fuzzed.data}, **target.options)
    except InvalidInput as exc:
        assert exc.field == target.input, f"{fuzzed.how}: {exc!r}"
        return None


def outcome(job: Any, deadline: float) -> tuple[str, str]:
    """How a fuzzed job ended: succeeded, failed typed, untyped (with what), or lost."""
    try:
        record = job.wait(timeout_s=max(1.0, deadline - time.monotonic()))
    except JobTimeout:
        return "lost", f"{job.id} never ended"
    if record.status is JobStatus.SUCCEEDED:
        return "succeeded", ""
    if record.status is JobStatus.FAILED and record.error and record.error.get("type") in TYPED:
        return "failed typed", ""
    return "untyped", f"{record.status.value}: {record.error}"


def serving_worker(stack: Any, specialisation: str) -> Any:
    return next(w for w in stack.workers if w.specialisation == specialisation and w.process.poll() is None)


def processes(worker: Any) -> set[int]:
    """The worker's Celery parent and its pool processes: a crashed pool process is replaced by a new pid."""
    parent = psutil.Process(worker.process.pid)
    return {parent.pid, *(child.pid for child in parent.children(recursive=True))}


def good_inputs(target: Target, sample_image: Path) -> dict[str, Any]:
    good = {"caption": sample_image, "transcribe": wav_bytes(rate=16000, channels=1, seconds=1.0),
            "extract": make_video(seconds=1.0, fps=4, size=(32, 24))}
    return {target.input: good[target.task], **target.options}


def test_fuzzed_files_through_workers_end_typed_and_the_workers_keep_serving(serve, sample_image, figure):
    # Given a caption, a speech and a media worker, and fuzzed files of each one's kind
    stack = serve("caption")
    for target in TARGETS:
        serve(target.specialisation)
    workers = {t.specialisation: serving_worker(stack, t.specialisation) for t in TARGETS}
    pids = {name: processes(worker) for name, worker in workers.items()}
    rng = random.Random(SEED)
    corpus = [fuzzed for target in TARGETS for fuzzed in fuzzed_files(target, rng)]
    with stack.client() as client:
        # When each is submitted as a job's input
        jobs = [(fuzzed, submitted(client, fuzzed)) for fuzzed in corpus]
        deadline = time.monotonic() + WAIT_S
        ended = [(fuzzed, ("refused", "") if job is None else outcome(job, deadline)) for fuzzed, job in jobs]
        # and then a good job of each task
        good = {t.task: client.submit(t.task, **good_inputs(t, sample_image)).wait(timeout_s=180)
                for t in TARGETS}
    # Then each fuzzed file was refused or ended typed, the good jobs succeeded, no worker process died
    counts = Counter(kind for _, (kind, _) in ended)
    crashed = sorted(name for name, worker in workers.items()
                     if worker.process.poll() is not None or processes(worker) != pids[name])
    figure("Fuzzing: decoders and submission schema",
           load=f"{sum(EXAMPLES.values())} in-process examples, {len(corpus)} fuzzed jobs through workers",
           bad_inputs="random and mutated image, audio, video bytes; random inputs for every task schema; "
                      "random pipeline specs",
           lost=counts["lost"],
           result=f"{counts['refused']} refused at submission, {counts['failed typed']} failed typed in "
                  f"worker, {counts['succeeded']} succeeded, {counts['untyped']} untyped; "
                  f"worker crashes {len(crashed)}")
    problems = [f"{f.target.task} {f.how}: {kind} {detail}" for f, (kind, detail) in ended
                if kind in ("untyped", "lost")]
    problems += [f"the good {task} job after them: {r.status.value} {r.error}" for task, r in good.items()
                 if r.status is not JobStatus.SUCCEEDED]
    problems += [f"the {name} worker died or its pool process was replaced" for name in crashed]
    assert not problems, "\n".join(problems)
