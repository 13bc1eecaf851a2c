"""Pipelines are values, checked when defined: in Python, or as JSON/YAML data."""

import json

import pytest

from mmq.tasks import PIPELINES, TASKS, Field, Format, InvalidPipeline, Kind, Pipeline, Step
from mmq.tasks.specfiles import load_pipeline_folder, pipeline_from_dict

CAPTION_THEN_SUMMARIZE = {
    "name": "describe-briefly",
    "inputs": {"image": {"kind": "image"}},
    "steps": [
        {"name": "caption", "task": "caption", "bind": {"image": "input.image"}},
        {"name": "brief", "task": "summarize", "bind": {"text": {"format": "Caption: {caption.text}"}}},
    ],
    "outputs": {"caption": "caption.text", "brief": "brief.summary"},
}


def test_a_spec_becomes_a_pipeline_with_levels():
    pipeline = pipeline_from_dict(CAPTION_THEN_SUMMARIZE, TASKS)
    assert pipeline.levels() == {"caption": 0, "brief": 1}
    assert pipeline.steps[1].bind["text"] == Format("Caption: {caption.text}")


def test_the_built_in_pipelines_wire_what_the_seed_describes():
    assert [s.task for s in PIPELINES["imagine"].ordered()] == ["text2image", "caption", "summarize"]
    assert PIPELINES["video-digest"].levels() == {"extract": 0, "captions": 1, "transcript": 1, "summary": 2}
    assert PIPELINES["video-digest"].steps[1].each == {"image": "extract.frames"}
    assert PIPELINES["image-search"].levels() == {"embed_images": 0, "embed_query": 0, "rank": 1}


def test_the_catalogue_pipelines_of_speech_sound_and_storyboards_are_wired_as_the_issue_asks():
    assert PIPELINES["describe-and-speak"].levels() == {"describe": 0, "speak": 1}
    assert PIPELINES["describe-and-speak"].steps[1].bind == {"text": "describe.description"}
    # voice command: one transcript, then an image and a sound from it side by side
    assert PIPELINES["voice-command"].levels() == {"transcribe": 0, "text2image": 1, "compose": 1}
    assert PIPELINES["voice-command"].outputs["sound"] == "compose.audio"
    # storyboard: one picture per sentence of the summary (fan-out), then one video of them all
    storyboard = PIPELINES["storyboard"]
    assert storyboard.levels() == {"summarize": 0, "pictures": 1, "video": 2}
    assert storyboard.steps[1].each == {"prompt": "summarize.sentences"}
    assert storyboard.steps[2].bind["images"] == "pictures.image"


@pytest.mark.parametrize("steps, message", [
    ([Step("a", "nope")], "step 'a': unknown task 'nope'"),
    ([Step("a", "text2image")], "step 'a': required input 'prompt' is not wired"),
    ([Step("a", "text2image", {"prompt": "input.picture"})], "input 'prompt' wants text but 'input.picture' is image"),
    ([Step("a", "caption", {"image": "b.text"})], "step 'a': uses unknown step 'b'"),
    ([Step("a", "caption", {"image": "input.picture"}), Step("b", "summarize", {"text": "a.txt"})],
     "input 'text' is wired to unknown 'a.txt'"),
    ([Step("a", "caption", each={"image": "input.picture"})], "'each' over 'input.picture' \\(image\\)"),
    ([Step("a", "summarize", {"text": "b.summary"}), Step("b", "summarize", {"text": "a.summary"})],
     "steps form a cycle"),
    ([Step("a", "caption", {"image": "input.picture"}), Step("b", "text2image", {"prompt": Format("{a.image}")})],
     "no input 'image'|wired to unknown"),
    ([Step("a", "caption", {"image": "input.picture"}),
      Step("b", "text2image", {"prompt": Format("{input.picture}")})], "uses 'input.picture', which is not text"),
    ([Step("a", "caption", {"image": "input.pictures"})], "wants image but 'input.pictures' is list of image"),
])
def test_inconsistent_pipelines_fail_when_defined_naming_the_step(steps, message):
    pipeline = Pipeline(name="bad", inputs={"picture": Field(Kind.IMAGE), "pictures": Field(Kind.IMAGE, many=True)},
                        steps=tuple(steps), outputs={})
    with pytest.raises(InvalidPipeline, match=message):
        pipeline.validate(TASKS)


@pytest.mark.parametrize("change, message", [
    ({"steps": []}, "'steps' must be a non-empty list"),
    ({"inputs": {"image": {"kind": "picture"}}}, "unknown kind 'picture'"),
    ({"inputs": {"image": {"kind": "image", "colour": "red"}}}, "unknown keys 'colour'"),
    ({"outputs": {"x": "caption.nothing"}}, "output 'x' refers to unknown 'caption.nothing'"),
    ({"extra": 1}, "unknown keys: 'extra'"),
])
def test_bad_specs_are_refused_naming_the_part(change, message):
    with pytest.raises(InvalidPipeline, match=message):
        pipeline_from_dict({**CAPTION_THEN_SUMMARIZE, **change}, TASKS)


def test_a_pipelines_folder_is_read_and_its_errors_name_the_file(tmp_path):
    (tmp_path / "brief.json").write_text(json.dumps(CAPTION_THEN_SUMMARIZE))
    (tmp_path / "notes.txt").write_text("not a pipeline")
    assert list(load_pipeline_folder(tmp_path, TASKS)) == ["describe-briefly"]
    (tmp_path / "broken.yaml").write_text("name: broken\nsteps: [{name: a, task: nope}]\n")
    with pytest.raises(InvalidPipeline, match="broken.yaml: .*unknown task 'nope'"):
        load_pipeline_folder(tmp_path, TASKS)


def test_yaml_never_builds_python_objects(tmp_path):
    (tmp_path / "evil.yaml").write_text("!!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(InvalidPipeline, match="not valid YAML"):
        load_pipeline_folder(tmp_path, TASKS)
    assert not (tmp_path / "pwned").exists()
