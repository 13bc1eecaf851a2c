"""`segment` through a real segment worker: points and boxes in, one binary mask per prompt out.

Faked: the model hub (unreachable here) and the GPU. The worker runs a tiny Segment Anything model
of the real architecture with random weights on the CPU, so its masks are random shapes: these tests
check what does not depend on the weights — how many masks, their size, that they are black and
white, one finite score each, determinism — and that bad prompts are refused, naming the input.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest
from PIL import Image

from mmq.clients.commands.jobs import parse_inputs
from mmq.tasks import InvalidInput, JobStatus
from mmq.tasks.catalogue import TASKS
from tests.conftest import served_client
from tests.outcomes import finished

WIDTH, HEIGHT = 256, 192  # samples/house.png: not square, so width and height can't be swapped unseen


segment = served_client("segment")


def segmented(client, **inputs):
    """The finished job (its `outputs` hold the masks as artifacts) and its record."""
    job = client.submit("segment", **inputs)
    return job, finished(job)


def mask_pixels(artifact) -> np.ndarray:
    """A mask output as an array, checked to be a black and white PNG at the image's size."""
    assert artifact.media_type == "image/png"
    image = Image.open(io.BytesIO(artifact.read()))
    assert image.mode == "L" and image.size == (WIDTH, HEIGHT)
    pixels = np.asarray(image)
    assert set(np.unique(pixels)) <= {0, 255}
    return pixels


def assert_scores(scores, count: int) -> None:
    assert isinstance(scores, list) and len(scores) == count
    # Predicted IoUs: about 0..1 for the real model; random weights may stray a little outside.
    assert all(isinstance(s, float) and math.isfinite(s) and -10 < s < 10 for s in scores), scores


def assert_still_segments(client, sample_image) -> None:
    job, _ = segmented(client, image=sample_image, points=[[100, 80]])
    assert len(job.outputs["masks"]) == 1


def test_two_boxes_give_two_binary_masks_at_the_image_size(segment, sample_image):
    boxes = [[10, 10, 120, 90], [100, 40, WIDTH, HEIGHT]]  # the second ends on the image's far edges

    job, record = segmented(segment, image=sample_image, boxes=boxes, points=[[110, 60]])

    masks = [mask_pixels(artifact) for artifact in job.outputs["masks"]]
    assert len(masks) == 2
    assert_scores(job.outputs["scores"], 2)
    assert record.step_states["segment"].progress == (2, 2)  # one unit of progress per mask


def test_points_alone_give_one_mask_and_the_same_request_gives_the_same_mask(segment, sample_image):
    request = {"image": sample_image, "points": [[40, 50], [200, 150]], "point_labels": [1, 0]}

    first, _ = segmented(segment, **request)
    second, _ = segmented(segment, **request)

    (mask,) = [mask_pixels(artifact) for artifact in first.outputs["masks"]]
    (again,) = [mask_pixels(artifact) for artifact in second.outputs["masks"]]
    assert np.array_equal(mask, again)
    assert_scores(first.outputs["scores"], 1)
    assert first.outputs["scores"] == second.outputs["scores"]


@pytest.mark.parametrize("inputs, message", [
    ({"points": [[5, 5], [300, 10]]}, r"points\[1\]: \(300, 10\) is outside the 256x192 image"),
    ({"points": [[5, HEIGHT]]}, r"points\[0\]: \(5, 192\) is outside the 256x192 image"),
    ({"boxes": [[10, 10, 50, 50], [80, 10, 40, 50]]}, r"boxes\[1\]: \(80, 10, 40, 50\) is empty"),
    ({"boxes": [[10, 10, WIDTH + 1, 50]]}, r"boxes\[0\]: .* reaches outside the 256x192 image"),
    ({"points": [[5, 5], [6, 6]], "point_labels": [1]}, r"point_labels has 1 labels for 2 points"),
])
def test_a_prompt_the_image_cannot_hold_fails_the_job_naming_it(segment, sample_image, inputs, message):
    record = finished(segment.submit("segment", image=sample_image, **inputs), JobStatus.FAILED)

    assert (record.error["step"], record.error["type"]) == ("segment", "InvalidInput")
    assert re.search(message, record.error["message"]), record.error["message"]
    assert_still_segments(segment, sample_image)


@pytest.mark.parametrize("inputs, message", [
    ({}, r"needs at least one of points or boxes"),
    ({"points": [[1, 2, 3]]}, r"points\[0\] must be a list of 2 numbers"),
    ({"boxes": [[1, 2, -3, 4]]}, r"boxes\[0\]\[2\] must be at least 0"),
])
def test_submission_refuses_malformed_prompts(segment, sample_image, inputs, message):
    with pytest.raises(InvalidInput, match=message):
        segment.submit("segment", image=sample_image, **inputs)
    assert_still_segments(segment, sample_image)


def test_the_command_line_reads_a_point_as_two_comma_separated_numbers():
    schema = TASKS["segment"].inputs

    inputs = parse_inputs(schema, ["points=10,20", "points=30.5,4", "boxes=1,2,30,40"])

    assert inputs == {"points": [[10.0, 20.0], [30.5, 4.0]], "boxes": [[1.0, 2.0, 30.0, 40.0]]}
