"""`text2mesh` through a real Shap-E worker: a closed, coloured PLY mesh and a PNG preview of the
asked size, the same bytes for the same seed; bad prompts and sizes refused, the worker serving on.

Faked: the model hub (unreachable), so the worker loads a tiny Shap-E with random weights built
locally with `save_pretrained` (`mmq.workers.text2mesh.tiny`); no GPU. Its objects are random
blobs, so these tests check the mesh's structure, the preview's size and the plumbing.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from mmq.tasks import InvalidInput, JobStatus
from tests.conftest import served_client
from tests.outcomes import succeeded

PROMPT = "a red chair"
GOOD = {"prompt": PROMPT, "steps": 2, "preview_size": 32, "seed": 0, "grid_size": 64}  # 64³: quick on a CPU
# The PLY body the worker writes: per vertex x, y, z as float32 and red, green, blue as uchar;
# per face a uchar count (3) and three int32 vertex indices, all little-endian.
VERTEX = np.dtype([("xyz", "<f4", (3,)), ("rgb", "u1", (3,))])
FACE = np.dtype([("count", "u1"), ("index", "<i4", (3,))])
VERTEX_PROPERTIES = ["float x", "float y", "float z", "uchar red", "uchar green", "uchar blue"]


@dataclass
class Mesh:
    vertices: np.ndarray  # VERTEX records
    faces: np.ndarray  # FACE records


@dataclass
class Result:
    ply: bytes
    preview: bytes


text2mesh = served_client("text2mesh", scope="module")


@pytest.fixture(scope="module")
def first(text2mesh) -> Result:
    """The good job's outputs, made once for the tests of this module."""
    return generate(text2mesh, **GOOD)


def generate(client, **inputs) -> Result:
    job = client.submit("text2mesh", **inputs)
    succeeded(job)
    mesh, preview = job.outputs["mesh"], job.outputs["preview"]
    assert mesh.media_type == "model/ply" and preview.media_type == "image/png"
    return Result(ply=mesh.read(), preview=preview.read())


def parse_ply(data: bytes) -> Mesh:
    """Check the header against the body's length, then read the body."""
    header, separator, body = data.partition(b"end_header\n")
    assert separator, "no end_header"
    lines = header.decode("ascii").splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"], lines
    elements = [line.split() for line in lines if line.startswith("element ")]
    assert [name for _, name, _ in elements] == ["vertex", "face"], lines
    properties = [line.removeprefix("property ") for line in lines if line.startswith("property ")]
    assert properties == [*VERTEX_PROPERTIES, "list uchar int vertex_index"], properties
    vertex_count, face_count = (int(count) for _, _, count in elements)
    assert len(body) == vertex_count * VERTEX.itemsize + face_count * FACE.itemsize, (len(body), elements)
    vertices = np.frombuffer(body, dtype=VERTEX, count=vertex_count)
    faces = np.frombuffer(body, dtype=FACE, count=face_count, offset=vertex_count * VERTEX.itemsize)
    return Mesh(vertices=vertices, faces=faces)


def open_edges(faces: np.ndarray) -> list[tuple[int, int]]:
    """Directed edges that are not matched by exactly one reverse edge: none on a closed surface
    whose triangles all wind the same way."""
    directed = Counter()
    for a, b, c in faces.tolist():
        directed.update([(a, b), (b, c), (c, a)])
    return [edge for edge, n in directed.items() if n != 1 or directed[edge[::-1]] != 1]


def test_a_prompt_gives_a_closed_coloured_mesh(first):
    mesh = parse_ply(first.ply)

    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    assert (mesh.faces["count"] == 3).all()
    index = mesh.faces["index"]
    assert index.min() >= 0 and index.max() < len(mesh.vertices)
    assert np.unique(index).size == len(mesh.vertices)  # every vertex is on some triangle
    positions = mesh.vertices["xyz"]
    assert np.isfinite(positions).all() and np.abs(positions).max() <= 1  # Shap-E's box is [-1, 1]³
    assert len(np.unique(mesh.vertices["rgb"], axis=0)) > 1  # coloured per vertex, not one flat colour
    assert open_edges(mesh.faces["index"]) == []


def test_the_preview_is_a_png_of_the_asked_size(first):
    preview = Image.open(io.BytesIO(first.preview))
    preview.load()
    assert preview.format == "PNG" and preview.mode == "RGB" and preview.size == (32, 32)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_another_object(text2mesh, first):
    again = generate(text2mesh, **GOOD)
    assert again.ply == first.ply and again.preview == first.preview

    other = generate(text2mesh, **{**GOOD, "seed": 1})
    assert other.ply != first.ply
    assert len(parse_ply(other.ply).faces) > 0


@pytest.mark.parametrize("inputs, field", [
    ({"preview_size": 16}, "preview_size"),
    ({"prompt": ""}, "prompt"),
])
def test_submission_refuses_bad_input_naming_the_field(text2mesh, inputs, field):
    with pytest.raises(InvalidInput, match=field) as refused:
        text2mesh.submit("text2mesh", **{**GOOD, **inputs})
    assert refused.value.field == field


def test_a_prompt_over_the_text_encoders_limit_fails_the_job_and_the_worker_serves_on(text2mesh, first):
    record = text2mesh.submit("text2mesh", **{**GOOD, "prompt": "a red chair " * 30}).wait(timeout_s=180)
    assert record.status is JobStatus.FAILED
    assert record.error["type"] == "InvalidInput"
    assert "prompt" in record.error["message"] and "at most 77" in record.error["message"]

    assert generate(text2mesh, **GOOD).ply == first.ply
