"""Embedding outputs and rankings, shared by the specialisations that embed (clip, sentence,
features), and the .npy files that carry large arrays (embeddings, depth)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from .specialisation_base import Blob

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
    return Blob(encode_npy(matrix), NPY)


def encode_npy(array: np.ndarray) -> bytes:
    """The array as an .npy file's bytes (no pickles)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def ranking(scores: list[tuple[str, int, float]]) -> list[dict[str, Any]]:
    """[(kind, index, score)] → [{kind, index, score}], best first; ties keep the input order."""
    ordered = sorted(enumerate(scores), key=lambda item: (-item[1][2], item[0]))
    return [{"kind": kind, "index": index, "score": round(float(score), 6)} for _, (kind, index, score) in ordered]


def as_matrix(value: Any) -> np.ndarray:
    """An embedding input as a float32 matrix: inline rows, or an .npy artifact (read here)."""
    if hasattr(value, "read"):  # an ArtifactInput holding an .npy file
        matrix = np.load(io.BytesIO(value.read()), allow_pickle=False)
    else:
        matrix = np.asarray(value, dtype=np.float32)
    return np.atleast_2d(matrix).astype(np.float32)


def rank_embeddings(query: Any, candidates: list[Any]) -> list[dict[str, Any]]:
    """Every candidate row ranked by cosine similarity to the query's first row: [{index, score}]."""
    from mmq.tasks.errors import InvalidInput

    vector = normalise(as_matrix(query))[0]
    rows = [row for candidate in candidates for row in as_matrix(candidate)]
    if not rows:
        raise InvalidInput("candidates must hold at least one embedding", field="candidates")
    if any(row.shape != vector.shape for row in rows):
        raise InvalidInput(f"candidates must have the query's dimension {vector.shape[0]}", field="candidates")
    scores = normalise(np.stack(rows)) @ vector
    order = sorted(range(len(rows)), key=lambda i: (-scores[i], i))
    return [{"index": i, "score": round(float(scores[i]), 6)} for i in order]
