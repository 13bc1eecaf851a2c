"""Test media made on the spot with PyAV: short videos with (or without) a sound track."""

from __future__ import annotations

import io

import numpy as np


def make_video(*, seconds: float = 3.0, fps: int = 10, size: tuple[int, int] = (64, 48),
               with_audio: bool = True, tone_hz: float = 440.0) -> bytes:
    """An MP4 (MPEG-4 video, AAC audio) whose colour changes over time and whose sound is a tone."""
    import av

    buffer = io.BytesIO()
    out = av.open(buffer, mode="w", format="mp4")
    video = out.add_stream("mpeg4", rate=fps)
    video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
    audio = out.add_stream("aac", rate=16000) if with_audio else None
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
        t = np.arange(int(seconds * 16000)) / 16000
        samples = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="flt", layout="mono")
            frame.sample_rate = 16000
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    out.close()
    return buffer.getvalue()


def speak(text: str, path) -> None:
    """Speech from espeak-ng (Debian package; `make test` installs it), as a WAV file."""
    import subprocess

    subprocess.run(["espeak-ng", "-s", "120", "-w", str(path), text], check=True, capture_output=True)


def mux_speech_into_video(video: bytes, wav_path, *, seconds: float) -> bytes:
    """The video's frames with the WAV's speech as its sound track."""
    import wave

    import av

    with wave.open(str(wav_path)) as speech:
        rate = speech.getframerate()
        samples = np.frombuffer(speech.readframes(speech.getnframes()), dtype="<i2").astype(np.float32) / 32768
    source = av.open(io.BytesIO(video))
    buffer = io.BytesIO()
    out = av.open(buffer, mode="w", format="mp4")
    video_out = out.add_stream("mpeg4", rate=10)
    in_stream = source.streams.video[0]
    video_out.width, video_out.height, video_out.pix_fmt = in_stream.width, in_stream.height, "yuv420p"
    for frame in source.decode(in_stream):
        for packet in video_out.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
            out.mux(packet)
    for packet in video_out.encode():
        out.mux(packet)
    audio_out = out.add_stream("aac", rate=rate)
    audio_out.layout = "mono"
    samples = samples[: int(seconds * rate)]
    for start in range(0, len(samples), 1024):
        frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024].copy(), format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in audio_out.encode(frame):
            out.mux(packet)
    for packet in audio_out.encode():
        out.mux(packet)
    out.close()
    return buffer.getvalue()
