"""Bad input: a clear error naming the problem, at submission where it can be known there, else the
job fails with it; the worker keeps serving, and a good job afterwards succeeds."""

import pytest

from mmq.tasks import InvalidInput, JobStatus, UnknownTask

PROMPT = "a beautiful house with a sunset background"


def assert_still_serving(client, sample_image):
    record = client.submit("remix", image=sample_image, width=64, height=64, steps=2).wait(timeout_s=180)
    assert record.status is JobStatus.SUCCEEDED, record.error


@pytest.mark.parametrize("name, inputs, error, message", [
    ("caption", {"image": "NOTES"}, InvalidInput, "image: notes.txt is not an image .*text/plain"),
    ("drawify", {"prompt": PROMPT}, UnknownTask, "no task or pipeline named 'drawify'"),
    ("remix", {}, InvalidInput, "pipeline 'remix' needs the input 'image'"),
    ("text2image", {"promt": PROMPT}, InvalidInput, "has no input 'promt' \\(did you mean 'prompt'\\?\\)"),
    ("text2image", {"prompt": PROMPT, "steps": 0}, InvalidInput, "steps must be at least 1 but is 0"),
    ("text2image", {"prompt": PROMPT, "width": 100}, InvalidInput, "width must be a multiple of 8 but is 100"),
    ("caption", {"image": "MISSING"}, InvalidInput, "image: cannot read .*nothing.png"),
])
def test_submission_refuses_bad_input_then_a_good_job_runs(client, sample_image, tmp_path,
                                                           name, inputs, error, message):
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not an image\n")
    files = {"NOTES": notes, "MISSING": tmp_path / "nothing.png"}
    inputs = {k: files.get(v, v) if isinstance(v, str) else v for k, v in inputs.items()}
    with pytest.raises(error, match=message):
        client.submit(name, **inputs)
    assert_still_serving(client, sample_image)


def test_a_truncated_image_fails_the_job_in_the_worker_naming_the_problem(client, sample_image, tmp_path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(sample_image.read_bytes()[:300])  # a PNG header, then nothing
    record = client.submit("remix", image=truncated, width=64, height=64, steps=2).wait(timeout_s=180)
    assert record.status is JobStatus.FAILED
    assert record.error["step"] == "caption" and record.error["type"] == "InvalidInput"
    assert "image" in record.error["message"] and "truncated" in record.error["message"].lower()
    assert "text2image" not in record.step_states  # no step starts after its job failed
    assert_still_serving(client, sample_image)


def test_an_image_over_the_pixel_limit_fails_before_it_is_decoded(client, sample_image, tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # A 9000 x 9000 PNG header: 81 megapixels, over the 64 megapixel limit.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 9000, 9000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    record = client.submit("caption", image=bomb).wait(timeout_s=180)
    assert record.status is JobStatus.FAILED
    assert "9000x9000" in record.error["message"] and "limit" in record.error["message"]
    assert_still_serving(client, sample_image)
