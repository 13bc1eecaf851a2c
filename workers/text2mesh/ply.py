"""Meshes out as PLY: binary little-endian, a position and an RGB colour per vertex, then triangles.

Written in memory with numpy (diffusers' `export_to_ply` writes a path, one vertex per Python call).
"""

from __future__ import annotations

import numpy as np

VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
FACE = np.dtype([("count", "u1"), ("vertex_index", "<i4", (3,))])  # a list of three indices per face


def encode_ply(positions: np.ndarray, colours: np.ndarray, faces: np.ndarray) -> bytes:
    """PLY bytes for `positions` ([n, 3] floats), `colours` ([n, 3] in 0..1) and `faces` ([m, 3] indices)."""
    vertices = np.empty(len(positions), dtype=VERTEX)
    for axis, name in enumerate("xyz"):
        vertices[name] = positions[:, axis]
    rgb = np.round(np.clip(colours, 0.0, 1.0) * 255).astype(np.uint8)
    for channel, name in enumerate(("red", "green", "blue")):
        vertices[name] = rgb[:, channel]
    triangles = np.empty(len(faces), dtype=FACE)
    triangles["count"] = 3
    triangles["vertex_index"] = faces
    return _header(len(vertices), len(triangles)) + vertices.tobytes() + triangles.tobytes()


def _header(vertices: int, faces: int) -> bytes:
    lines = [
        "ply",
        "format binary_little_endian 1.0",
        f"element vertex {vertices}",
        *(f"property float {axis}" for axis in "xyz"),
        *(f"property uchar {channel}" for channel in ("red", "green", "blue")),
        f"element face {faces}",
        "property list uchar int vertex_index",
        "end_header",
    ]
    return ("\n".join(lines) + "\n").encode("ascii")
