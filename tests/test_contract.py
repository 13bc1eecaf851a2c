"""Inputs are checked where they are first known; pipelines are checked when defined."""

import pytest

from mmq.tasks import PIPELINES, TASKS, ArtifactRef, InvalidInput, UnknownTask, lookup
from mmq.tasks.fields import Kind, check_inputs
from mmq.tasks.media_types import extension_for, sniff_media_type

IMAGE = ArtifactRef(uri="s3://b/blobs/x.png", media_type="image/png", sha256="x", size=1)
TEXT_FILE = ArtifactRef(uri="s3://b/blobs/x.txt", media_type="text/plain", sha256="x", size=1)


def check(name, **inputs):
    return check_inputs(lookup(name).inputs, inputs, where=name)


def test_defaults_fill_in_and_values_pass_through():
    checked = check("text2image", prompt="a house", steps=5)
    assert checked["steps"] == 5 and checked["width"] == 512 and checked["guidance"] == 7.5


@pytest.mark.parametrize("inputs, message", [
    ({"prompt": "a house", "steps": 0}, "steps must be at least 1 but is 0"),
    ({"prompt": "a house", "width": 100}, "width must be a multiple of 8 but is 100"),
    ({"prompt": "a house", "steps": "ten"}, "steps must be an integer, got 'ten'"),
    ({"prompt": "a house", "steps": 2.5}, "steps must be an integer"),
    ({"prompt": "   "}, "prompt must not be empty"),
    ({"prompt": "x" * 2001}, "over the limit of 2000"),
    ({}, "needs the input 'prompt'"),
    ({"prompt": "a house", "stepz": 3}, "has no input 'stepz' \\(did you mean 'steps'\\?\\)"),
])
def test_bad_inputs_are_named(inputs, message):
    with pytest.raises(InvalidInput, match=message):
        check("text2image", **inputs)


def test_an_image_input_refuses_a_file_of_another_kind():
    assert check("caption", image=IMAGE)["image"] == IMAGE
    with pytest.raises(InvalidInput, match="image must be an image, got a file of type text/plain"):
        check("caption", image=TEXT_FILE)


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UnknownTask, match="did you mean 'remix'"):
        lookup("remx")


def test_command_line_strings_are_typed_by_the_schema():
    field = TASKS["text2image"].inputs["guidance"]
    assert field.parse("guidance", "7") == 7.0
    with pytest.raises(InvalidInput, match="guidance must be a number, got 'high'"):
        field.parse("guidance", "high")


def test_remix_is_caption_then_text2image():
    remix = PIPELINES["remix"]
    assert [s.task for s in remix.steps] == ["caption", "text2image"]
    assert remix.steps[1].bind["prompt"] == "caption.text"
    assert remix.outputs == {"caption": "caption.text", "image": "text2image.image"}


def test_points_and_boxes_are_tuples_of_numbers_checked_at_submission():
    checked = check("segment", image=IMAGE, points=[[10, 20.5]], boxes=[[0, 0, 5, 5]])
    assert checked["points"] == [[10.0, 20.5]] and checked["boxes"] == [[0.0, 0.0, 5.0, 5.0]]
    assert checked["point_labels"] == []
    with pytest.raises(InvalidInput, match=r"points\[0\] must be a list of 2 numbers, got \[1, 2, 3\]"):
        check("segment", image=IMAGE, points=[[1, 2, 3]])
    with pytest.raises(InvalidInput, match=r"boxes\[0\]\[2\] must be at least 0 but is -4"):
        check("segment", image=IMAGE, boxes=[[0, 0, -4, 5]])
    with pytest.raises(InvalidInput, match=r"points\[0\]\[1\] must be a finite number"):
        check("segment", image=IMAGE, points=[[1, float("nan")]])
    with pytest.raises(InvalidInput, match="needs at least one of points or boxes"):
        TASKS["segment"].check_inputs({"image": IMAGE}, where="segment")


def test_a_point_on_the_command_line_is_numbers_separated_by_commas():
    field = TASKS["segment"].inputs["points"]
    assert field.parse("points", "120,80.5") == [120.0, 80.5]
    with pytest.raises(InvalidInput, match="points must be 2 numbers separated by commas, got '120;80'"):
        field.parse("points", "120;80")
    assert field.describe()["size"] == 2


def test_meshes_and_arrays_are_artifact_kinds_known_by_their_bytes():
    assert sniff_media_type(b"ply\nformat binary_little_endian 1.0\n") == "model/ply"
    assert sniff_media_type(b"glTF\x02\x00\x00\x00") == "model/gltf-binary"
    assert extension_for("model/ply") == "ply" and extension_for("model/gltf-binary") == "glb"
    assert Kind.MESH.is_artifact and Kind.MESH.accepts("model/ply") and not Kind.MESH.accepts("image/png")
    assert Kind.ARRAY.accepts("application/x-npy") and not Kind.ARRAY.accepts("application/json")
