"""Embedding outputs and rankings, shared by the specialisations that embed (clip, sentence)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from .specialisation import Blob

NPY = "application/x-npy"


def normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, so a dot product is a cosine similarity."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def embedding_output(matrix: np.ndarray, *, inline_max: int) -> list[list[float]] | Blob:
    """Small matrices inline (a list of rows), large ones as a float32 .npy artifact (n x d)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.size <= inline_max:
        return [[float(x) for x in row] for row in matrix]
    buffer = io.BytesIO()
    np.save(buffer, matrix, allow_pickle=False)
    return Blob(buffer.getvalue(), NPY)


def ranking(scores: list[tuple[str, int, float]]) -> list[dict[str, Any]]:
    """[(kind, index, score)] → [{kind, index, score}], best first; ties keep the input order."""
    ordered = sorted(enumerate(scores), key=lambda item: (-item[1][2], item[0]))
    return [{"kind": kind, "index": index, "score": round(float(score), 6)} for _, (kind, index, score) in ordered]
