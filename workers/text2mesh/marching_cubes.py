"""The marching-cubes lookup table that diffusers' Shap-E `MeshDecoder` keeps as two buffers.

`MeshDecoder` creates its `cases` and `masks` buffers as zeros: the real checkpoint carries the
table in its weights (diffusers' conversion script writes it there). A tiny model built from
scratch would have an all-zero table, which turns every surface into no triangles at all, so the
tiny builder fills the buffers with this table, derived here from first principles.

Layout, as `MeshDecoder.forward` reads it: a cube's corner `i` sits at (i & 1, i >> 1 & 1, i >> 2 & 1)
and is bit `i` of the case number when the field there is positive (inside). `cases[case, k]` holds
the three edge numbers of triangle `k` (edges numbered as in `_create_flat_edge_indices`) and
`masks[case, k]` says whether triangle `k` exists. Triangles wind so that their normals point out
of the shape, from the positive corners to the negative ones.

How: on each face of the cube, join the points where the surface crosses the face's edges into
segments; a face with two diagonal positive corners (the ambiguous case) cuts each of them off on
its own. The decision depends only on the face, so two cubes sharing a face agree and the mesh is
closed. The segments of all six faces chain into loops, and each loop is fanned into triangles.
A loop of n crossings gives n - 2 triangles; no case needs more than five in all, the table's
width (`lookup_table` checks every case).
"""

from __future__ import annotations

import numpy as np
import torch

MAX_TRIANGLES = 5  # per cube: the table's second dimension
# Corner pairs in MeshDecoder's edge order: four edges along x, four along y, four along z.
EDGES = ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7))


def lookup_table() -> tuple[torch.Tensor, torch.Tensor]:
    """`cases` ([256, 5, 3] long) and `masks` ([256, 5] bool), ready for `MeshDecoder`'s buffers."""
    cases = torch.zeros(256, MAX_TRIANGLES, 3, dtype=torch.long)
    masks = torch.zeros(256, MAX_TRIANGLES, dtype=torch.bool)
    for case in range(256):
        triangles = case_triangles(case)
        if len(triangles) > MAX_TRIANGLES:  # cannot happen: see the module docstring
            raise AssertionError(f"case {case} needs {len(triangles)} triangles")
        for k, triangle in enumerate(triangles):
            cases[case, k] = torch.tensor(triangle)
            masks[case, k] = True
    return cases, masks


def case_triangles(case: int) -> tuple[tuple[int, int, int], ...]:
    """The triangles (as edge numbers) for one pattern of positive corners."""
    successor = _face_segments(case)
    triangles: list[tuple[int, int, int]] = []
    while successor:
        loop = _fan_start(_take_loop(successor))
        triangles += [(loop[0], loop[i], loop[i + 1]) for i in range(1, len(loop) - 1)]
    return tuple(triangles)


def _corner(i: int) -> np.ndarray:
    return np.array([i & 1, i >> 1 & 1, i >> 2 & 1], dtype=float)


def _midpoint(edge: int) -> np.ndarray:
    a, b = EDGES[edge]
    return (_corner(a) + _corner(b)) / 2


def _faces() -> list[tuple[list[int], np.ndarray]]:
    """Each face's four corners and its outward normal."""
    faces = []
    for axis in range(3):
        for side in (0, 1):
            corners = [i for i in range(8) if (i >> axis & 1) == side]
            normal = np.zeros(3)
            normal[axis] = 1 if side else -1
            faces.append((corners, normal))
    return faces


def _face_segments(case: int) -> dict[int, int]:
    """Every surface segment on the cube's faces, as edge -> next edge along the surface's loops."""
    positive = {i for i in range(8) if case >> i & 1}
    successor: dict[int, int] = {}
    for corners, normal in _faces():
        edges = [e for e, (a, b) in enumerate(EDGES) if a in corners and b in corners]
        crossed = [e for e in edges if (EDGES[e][0] in positive) != (EDGES[e][1] in positive)]
        inside = [c for c in corners if c in positive]
        if len(crossed) == 4:
            # Two diagonal positive corners: cut each off on its own.
            for corner in inside:
                pair = [e for e in crossed if corner in EDGES[e]]
                _add_segment(successor, pair, corner, normal)
        elif crossed:
            _add_segment(successor, crossed, inside[0], normal)
    return successor


def _add_segment(successor: dict[int, int], pair: list[int], inside: int, normal: np.ndarray) -> None:
    # Direct the segment so that, seen from outside the cube, the positive corner lies to its
    # right: loops then run the same way round on every face, and their fans face outwards.
    a, b = pair
    start, end = _midpoint(a), _midpoint(b)
    if np.dot(np.cross(end - start, _corner(inside) - start), normal) > 0:
        a, b = b, a
    if a in successor:
        raise AssertionError(f"edge {a} starts two segments")
    successor[a] = b


def _fan_start(loop: list[int]) -> list[int]:
    """The loop rotated so that no fan diagonal joins two edges of one face.

    Such a diagonal (possible only across a face with two separate segments) could be drawn by the
    neighbouring cube too, and an edge shared by four triangles is not a clean surface. Some
    rotation always avoids it; the first one that does is taken.
    """
    for shift in range(len(loop)):
        rotated = loop[shift:] + loop[:shift]
        if not any(_edge_faces(rotated[0]) & _edge_faces(rotated[i]) for i in range(2, len(loop) - 1)):
            return rotated
    raise AssertionError(f"no clean fan for the loop {loop}")


def _edge_faces(edge: int) -> set[tuple[int, int]]:
    """The two faces (axis, side) an edge lies on."""
    a, b = EDGES[edge]
    return {(axis, a >> axis & 1) for axis in range(3) if (a >> axis & 1) == (b >> axis & 1)}


def _take_loop(successor: dict[int, int]) -> list[int]:
    """Remove one closed loop of edges from `successor`, smallest edge first (deterministic)."""
    start = min(successor)
    loop = [start]
    edge = successor.pop(start)
    while edge != start:
        loop.append(edge)
        edge = successor.pop(edge)
    return loop
