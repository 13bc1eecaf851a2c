"""The one walk over artifact references (mmq.tasks.artifact_walk): what it converts, what it
leaves alone, and how it names the items of a list input."""

import pytest

from mmq.tasks import ArtifactRef, InvalidInput
from mmq.tasks.artifact_walk import find_artifacts, map_artifacts, map_named

REF = ArtifactRef(uri="s3://bucket/blobs/a.png", media_type="image/png", sha256="a" * 64, size=3)
OTHER = ArtifactRef(uri="s3://bucket/blobs/b.wav", media_type="audio/wav", sha256="b" * 64, size=5)


def test_references_in_their_json_form_are_converted_through_nested_lists():
    value = [REF.to_dict(), [OTHER.to_dict(), "text"], 3]
    converted = map_artifacts(value, lambda ref: ref["uri"])
    assert converted == [REF.uri, [OTHER.uri, "text"], 3]


def test_a_kind_selects_what_is_converted_and_everything_else_is_left_as_it_is():
    detections = {"label": "cat", "score": 0.9}
    value = (REF, [OTHER, detections], REF.to_dict())
    converted = map_artifacts(value, lambda ref: ref.size, kind=ArtifactRef)
    assert converted == [REF.size, [OTHER.size, detections], REF.to_dict()]  # a tuple comes back a list
    assert map_artifacts("a caption", lambda ref: ref.size, kind=ArtifactRef) == "a caption"


def test_mappings_are_walked_only_when_asked():
    record = {"inputs": {"image": REF.to_dict()}, "outputs": {"frames": [OTHER.to_dict()]}}
    assert map_artifacts(record, lambda ref: "seen") == record
    with_urls = map_artifacts(record, lambda ref: {**ref, "url": "https://signed"}, through_mappings=True)
    assert with_urls["inputs"]["image"] == {**REF.to_dict(), "url": "https://signed"}
    assert with_urls["outputs"]["frames"] == [{**OTHER.to_dict(), "url": "https://signed"}]


def test_find_artifacts_lists_every_reference_of_a_view_in_order():
    view = {"id": "job", "inputs": {"image": REF.to_dict()}, "steps": [{"outputs": {"audio": [OTHER.to_dict()]}}]}
    assert find_artifacts(view) == [REF.to_dict(), OTHER.to_dict()]


def test_map_named_labels_each_item_by_its_place_for_errors_that_point_at_it():
    labels = map_named("images", ["a.png", ("b.png", "c.png")], lambda label, item: label)
    assert labels == ["images[0]", ["images[1][0]", "images[1][1]"]]
    assert map_named("image", "a.png", lambda label, item: (label, item)) == ("image", "a.png")

    def refuse_text(label: str, item: object) -> object:
        if isinstance(item, str):
            raise InvalidInput(f"{label} must be a file", field=label)
        return item

    with pytest.raises(InvalidInput, match=r"images\[1\] must be a file"):
        map_named("images", [REF, "not a file"], refuse_text)
