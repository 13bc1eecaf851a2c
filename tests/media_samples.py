"""Test media made on the spot with PyAV: short videos with (or without) a sound track."""

from __future__ import annotations

import io

import numpy as np


def make_video(*, seconds: float = 3.0, fps: int = 10, size: tuple[int, int] = (64, 48),
               with_audio: bool = True, tone_hz: float = 440.0,
               sound: tuple[np.ndarray, int] | None = None) -> bytes:
    """An MP4 (MPEG-4 video, AAC audio) whose colour changes over time and whose sound is a tone,
    or `sound` (mono float32 samples, rate) when given."""
    import av

    buffer = io.BytesIO()
    out = av.open(buffer, mode="w", format="mp4")
    video = out.add_stream("mpeg4", rate=fps)
    video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
    samples, rate = sound if sound is not None else _tone(seconds, tone_hz)
    audio = out.add_stream("aac", rate=rate) if with_audio else None
    if audio is not None:
        audio.layout = "mono"
    for i in range(int(seconds * fps)):
        pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        pixels[:, :, 0], pixels[:, :, 2] = (i * 8) % 255, 255 - (i * 8) % 255
        for packet in video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    if audio is not None:
        for start in range(0, len(samples), 1024):
            chunk = np.ascontiguousarray(samples[None, start:start + 1024])
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate = rate
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    out.close()
    return buffer.getvalue()


def _tone(seconds: float, hz: float, rate: int = 16000) -> tuple[np.ndarray, int]:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate


def speak(text: str, path) -> None:
    """Speech from espeak-ng (Debian package; `make test` installs it), as a WAV file, at 120 words
    a minute (its default is 175): clearer speech."""
    import shutil
    import subprocess

    assert shutil.which("espeak-ng"), "espeak-ng is needed: the Debian package espeak-ng (`make test`)"
    subprocess.run(["espeak-ng", "-s", "120", "-w", str(path), text], check=True, capture_output=True)


def read_wav(path) -> tuple[np.ndarray, int]:
    """A mono 16-bit WAV (what espeak-ng writes) as float32 samples and its rate."""
    import wave

    with wave.open(str(path)) as speech:
        frames = speech.readframes(speech.getnframes())
        return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768, speech.getframerate()
