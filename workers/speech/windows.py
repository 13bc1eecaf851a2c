"""Long audio in windows Whisper can take (30 s), cut where it is quiet so no word is split."""

from __future__ import annotations

import numpy as np

WINDOW_S = 30.0  # Whisper's encoder sees 30 s; longer input would be truncated by its features
SEARCH_S = 5.0  # how far before a window's end a cut may move to find a pause
QUIET_S = 0.5  # the span whose energy is compared: about one short pause between words
HOP_S = 0.05  # candidate cuts are this far apart
# Peak below -60 dBFS: nothing audible, let alone speech. Such windows are not sent to the model,
# which would otherwise "hear" words in silence (random weights always, real ones sometimes).
SILENCE_PEAK = 10 ** (-60 / 20)


def split_windows(audio: np.ndarray, rate: int) -> list[tuple[int, int]]:
    """(start, end) sample offsets covering all of `audio`, each at most `WINDOW_S` long."""
    window = int(WINDOW_S * rate)
    windows: list[tuple[int, int]] = []
    start = 0
    while audio.size - start > window:
        end = _quietest_cut(audio, lo=start + window - int(SEARCH_S * rate), hi=start + window, rate=rate)
        windows.append((start, end))
        start = end
    windows.append((start, audio.size))
    return windows


def is_silent(audio: np.ndarray) -> bool:
    return audio.size == 0 or float(np.max(np.abs(audio))) < SILENCE_PEAK


def _quietest_cut(audio: np.ndarray, *, lo: int, hi: int, rate: int) -> int:
    """The middle of the quietest `QUIET_S` span lying in [lo, hi]; the latest one on a tie."""
    span, hop = int(QUIET_S * rate), int(HOP_S * rate)
    region = audio[lo:hi].astype(np.float64)
    energy = np.concatenate(([0.0], np.cumsum(region * region)))
    starts = np.arange(0, region.size - span + 1, hop)
    sums = energy[starts + span] - energy[starts]
    best = starts.size - 1 - int(np.argmin(sums[::-1]))  # later cuts give fewer, longer windows
    return lo + int(starts[best]) + span // 2
