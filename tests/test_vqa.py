"""`answer` and `describe` through a real vqa worker process.

What is faked: the model hub (unreachable here), so the worker runs a tiny LLaVA-1.5 of the real
classes with random weights (`mmq.workers.vqa.tiny`), on the CPU (no GPU). Its text is random
words: the tests check that text comes back, is deterministic, and that bad input is refused
with an error naming the field; what the answers mean cannot be checked without the real weights.
"""

from pathlib import Path

import pytest

from mmq.tasks import InvalidInput, JobStatus
from tests.conftest import served_client
from tests.outcomes import finished

QUESTION = "What is in the picture?"
TINY_CONTEXT = 512  # the tiny decoder's positions (llava-1.5-7b-hf: 4096)


vqa = served_client("vqa")


def assert_still_answers(client, sample_image: Path) -> None:
    record = finished(client.submit("answer", image=sample_image, question=QUESTION, max_new_tokens=8))
    assert record.outputs["answer"].strip()


def test_answer_gives_text_reporting_progress_per_token(vqa, sample_image):
    record = finished(vqa.submit("answer", image=sample_image, question=QUESTION, max_new_tokens=16))

    assert set(record.outputs) == {"answer"}
    answer = record.outputs["answer"]
    assert isinstance(answer, str) and answer == answer.strip() and answer
    assert record.step_states["answer"].progress == (16, 16)


def test_describe_gives_a_description(vqa, sample_image):
    record = finished(vqa.submit("describe", image=sample_image, max_new_tokens=40))

    assert set(record.outputs) == {"description"}
    description = record.outputs["description"]
    assert isinstance(description, str) and description == description.strip() and description


def test_the_same_image_and_question_give_the_same_answer(vqa, sample_image):
    jobs = [vqa.submit("answer", image=sample_image, question=QUESTION, max_new_tokens=24) for _ in range(2)]

    first, second = (finished(job).outputs["answer"] for job in jobs)

    assert first == second


@pytest.mark.parametrize("question", ["", "  \n\t "])
def test_an_empty_question_is_refused_at_submission(vqa, sample_image, question):
    with pytest.raises(InvalidInput, match="question must not be empty"):
        vqa.submit("answer", image=sample_image, question=question)


def test_a_text_file_as_image_is_refused_at_submission(vqa, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not an image\n")

    with pytest.raises(InvalidInput, match="image: notes.txt is not an image"):
        vqa.submit("describe", image=notes)


def test_an_undecodable_image_fails_the_job_naming_image_then_a_good_job_runs(vqa, sample_image, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)  # a PNG signature, then junk

    record = finished(vqa.submit("answer", image=broken, question=QUESTION), JobStatus.FAILED)

    assert record.error["step"] == "answer" and record.error["type"] == "InvalidInput"
    assert record.error["message"].startswith("image: not a decodable image")
    assert_still_answers(vqa, sample_image)


@pytest.mark.parametrize("task, inputs, max_new_tokens", [
    ("answer", {"question": QUESTION}, 512),  # the contract's largest; prompt + 512 > 512
    ("describe", {}, 1024),
])
def test_max_new_tokens_over_the_context_fails_naming_it_then_a_good_job_runs(vqa, sample_image, task, inputs,
                                                                              max_new_tokens):
    job = vqa.submit(task, image=sample_image, max_new_tokens=max_new_tokens, **inputs)

    record = finished(job, JobStatus.FAILED)

    assert record.error["step"] == task and record.error["type"] == "InvalidInput"
    message = record.error["message"]
    assert message.startswith(f"max_new_tokens is {max_new_tokens}, over the ")
    assert f"context of {TINY_CONTEXT}" in message
    assert_still_answers(vqa, sample_image)


def test_a_question_holding_the_image_token_fails_naming_question(vqa, sample_image):
    job = vqa.submit("answer", image=sample_image, question="Is <image> a house?")

    record = finished(job, JobStatus.FAILED)

    assert record.error["type"] == "InvalidInput"
    assert record.error["message"] == "question must not contain the image token '<image>'"
    assert_still_answers(vqa, sample_image)
