"""Asking, without a model: an ask job's record, and how a plan becomes the rest of the job.

The planner itself (its grammar and its model) is tests/test_plan*.py; here a plan is a pipeline
spec written by hand, as the `plan` task outputs one.
"""

from __future__ import annotations

import pytest

from mmq.tasks.asking import ask_inputs, ask_pipeline, describe_plan, expand, kind_of_value
from mmq.tasks.catalogue import TASKS
from mmq.tasks.errors import InvalidInput, InvalidPipeline
from mmq.tasks.fields import Kind
from mmq.tasks.records import JobRecord, StepSpec, new_record
from mmq.tasks.records.model import step_from_spec

AUDIO = {"uri": "s3://mmq/a.wav", "media_type": "audio/wav", "sha256": "0" * 64, "size": 10}
VOICE_TO_PICTURE = {
    "name": "planned", "inputs": {"audio": {"kind": "audio"}},
    "steps": [{"name": "transcribe", "task": "transcribe", "bind": {"audio": "input.audio"}},
              {"name": "text2image", "task": "text2image", "bind": {"prompt": "transcribe.text"}},
              {"name": "caption", "task": "caption", "bind": {"image": "text2image.image"}}],
    "outputs": {"image": "text2image.image", "description": "caption.text"},
}


def ask_record() -> JobRecord:
    """An ask's record as submitted: one plan step (built by hand: the catalogue's `plan` task is
    the planner's; `new_record` of an ask is exercised where the planner is served)."""
    plan = StepSpec(name="plan", task="plan", queue="plan", celery_id="job1-0",
                    bind={"request": "input.request", "files": "input.files"}, expands=True)
    return JobRecord(id="job1", name="ask", inputs={"request": "draw what I say", "files": {"audio": "audio"},
                                                    "audio": AUDIO},
                     steps=[plan], output_map={"plan": "plan.pipeline"}, created_at=0.0)


def test_a_plan_becomes_the_steps_after_the_plan_step() -> None:
    expanded = expand(ask_record(), VOICE_TO_PICTURE, TASKS)
    assert [(s.name, s.task, s.level, s.celery_id) for s in expanded.steps] == [
        ("plan", "plan", 0, "job1-0"), ("transcribe", "transcribe", 1, "job1-1"),
        ("text2image", "text2image", 2, "job1-2"), ("caption", "caption", 3, "job1-3")]
    assert expanded.output_map == {"plan": "plan.pipeline", "image": "text2image.image",
                                   "description": "caption.text"}
    # The planned steps' options take their defaults, into the job's inputs as every job keeps them.
    assert expanded.inputs["audio"] == AUDIO and expanded.steps[2].bind["prompt"] == "transcribe.text"
    assert [s.queue for s in expanded.steps[1:]] == ["speech", "diffusion", "caption"]


def test_the_expanded_record_survives_its_compact_stored_form() -> None:
    expanded = expand(ask_record(), VOICE_TO_PICTURE, TASKS)
    import json

    stored = json.loads(expanded.spec_json())
    assert [step_from_spec(expanded.id, i, s) for i, s in enumerate(stored["steps"])] == expanded.steps
    assert stored["steps"][0]["expands"] is True and "expands" not in stored["steps"][1]


def test_a_redelivered_plan_step_finds_the_record_expanded_and_keeps_it() -> None:
    expanded = expand(ask_record(), VOICE_TO_PICTURE, TASKS)
    other = {**VOICE_TO_PICTURE, "steps": VOICE_TO_PICTURE["steps"][:1], "outputs": {"text": "transcribe.text"}}
    assert expand(expanded, other, TASKS) is expanded


@pytest.mark.parametrize("plan, message", [
    ({**VOICE_TO_PICTURE, "steps": [{"name": "plan", "task": "transcribe", "bind": {"audio": "input.audio"}}],
      "outputs": {"text": "plan.text"}}, "'plan'"),
    ({**VOICE_TO_PICTURE, "outputs": {"plan": "caption.text"}}, "'plan'"),
    ({**VOICE_TO_PICTURE, "steps": [{"name": "caption", "task": "caption", "bind": {"image": "input.audio"}}],
      "outputs": {"text": "caption.text"}}, "image"),
    ({"name": "planned", "inputs": {"photo": {"kind": "image"}}, "outputs": {"text": "caption.text"},
      "steps": [{"name": "caption", "task": "caption", "bind": {"image": "input.photo"}}]}, "photo"),
])
def test_a_plan_that_does_not_fit_the_job_is_refused_naming_why(plan: dict, message: str) -> None:
    with pytest.raises((InvalidPipeline, InvalidInput), match=message):
        expand(ask_record(), plan, TASKS)


def test_an_asks_inputs_are_typed_by_what_they_are_and_the_asks_own_names_are_reserved() -> None:
    assert kind_of_value("a", b"", "audio/wav") is Kind.AUDIO
    assert kind_of_value("v", b"", "video/mp4") is Kind.VIDEO  # a video is planned as one, not as its sound
    assert kind_of_value("t", "some text", None) is Kind.TEXT
    assert kind_of_value("n", 3, None) is Kind.INTEGER
    with pytest.raises(InvalidInput, match="no task takes a file of type application/pdf"):
        kind_of_value("doc", b"", "application/pdf")
    with pytest.raises(InvalidInput, match="'files'"):
        ask_pipeline({"files": Kind.IMAGE})
    with pytest.raises(InvalidInput, match="'my.photo'"):
        ask_pipeline({"my.photo": Kind.IMAGE})
    assert ask_inputs("go", {"audio": Kind.AUDIO}, {"audio": AUDIO})["files"] == {"audio": "audio"}


def test_a_plan_reads_as_calls_then_outputs() -> None:
    assert describe_plan(VOICE_TO_PICTURE) == [
        "transcribe = transcribe(audio=input.audio)", "text2image = text2image(prompt=transcribe.text)",
        "caption = caption(image=text2image.image)", "outputs: image=text2image.image, description=caption.text"]


def test_an_ask_is_a_record_like_any_other_with_its_plan_step_expanding() -> None:
    record = new_record(ask_pipeline({"audio": Kind.AUDIO}), ask_inputs("draw it", {"audio": Kind.AUDIO},
                                                                      {"audio": AUDIO}))
    assert [(s.name, s.task, s.expands) for s in record.steps] == [("plan", "plan", True)]
    assert record.output_map == {"plan": "plan.pipeline"}
