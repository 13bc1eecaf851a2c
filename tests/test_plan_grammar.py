"""The plan grammar without a model: every sentence it accepts is a runnable pipeline for the files.

Sentences are drawn at random from the grammar's own GBNF text (`tests/gbnf_sampler.py`), for
several sets of files, and each is read back with `plan_to_pipeline`: it must validate against
the catalogue and take the files it uses.
"""

import random

import pytest

from mmq.tasks import PIPELINES, TASKS, ArtifactRef, InvalidPipeline, Kind, NoPipelineFits
from mmq.tasks.planning import check_files_usable, max_chars, plan_grammar, plan_rules, plan_to_pipeline
from mmq.tasks.specfiles import pipeline_from_dict, pipeline_to_dict
from tests import gbnf_sampler

MEDIA_TYPES = {Kind.IMAGE: "image/png", Kind.AUDIO: "audio/wav", Kind.VIDEO: "video/mp4"}
FILE_SETS = [
    {},
    {"audio": Kind.AUDIO},
    {"photo": Kind.IMAGE},
    {"photo": Kind.IMAGE, "voice_note": Kind.AUDIO},
    {"clip": Kind.VIDEO, "notes": Kind.TEXT},
    {"a": Kind.IMAGE, "b": Kind.IMAGE, "notes": Kind.TEXT},
]
SAMPLES = 300  # sentences per set of files


def file_value(kind: Kind):
    if kind is Kind.TEXT:
        return "some notes"
    return ArtifactRef(uri="s3://b/k", media_type=MEDIA_TYPES[kind], sha256="0" * 64, size=1)


@pytest.mark.parametrize("files", FILE_SETS, ids=lambda f: ",".join(f) or "no-files")
def test_every_sentence_of_the_grammar_is_a_valid_pipeline_for_the_files(files):
    rules = gbnf_sampler.parse(plan_grammar(TASKS, PIPELINES, files))
    rng = random.Random(len(files))
    plans = 0
    for _ in range(SAMPLES):
        text = gbnf_sampler.sample(rules, rng)
        try:
            pipeline = plan_to_pipeline(text, TASKS, PIPELINES, files)
        except NoPipelineFits as exc:
            assert text.startswith("none: ") and exc.field == "request"
            continue
        plans += 1
        assert set(pipeline.inputs) <= set(files)
        assert all(pipeline.inputs[name].kind is files[name] for name in pipeline.inputs)
        pipeline.check_inputs({name: file_value(files[name]) for name in pipeline.inputs}, where="plan")
        again = pipeline_from_dict(pipeline_to_dict(pipeline), TASKS)  # what `mmq run ./plan.json` reads
        assert again.steps == pipeline.steps and again.outputs == pipeline.outputs
    assert plans > SAMPLES // 3


def test_the_longest_sentence_is_bounded():
    # The grammar is finite: max_chars is what a decoder needs as its token limit never to cut a plan.
    assert 200 < max_chars(plan_rules(TASKS, {"audio": Kind.AUDIO})) < 8000


def test_identical_sub_terms_become_one_step():
    text = ('image = text2image(prompt=transcribe(audio=input.audio).text).image\n'
            'description = caption(image=text2image(prompt=transcribe(audio=input.audio).text).image).text')

    pipeline = plan_to_pipeline(text, TASKS, PIPELINES, {"audio": Kind.AUDIO, "unused": Kind.IMAGE})

    assert [(s.name, s.task) for s in pipeline.steps] == [
        ("transcribe", "transcribe"), ("text2image", "text2image"), ("caption", "caption")]
    assert pipeline.steps[1].bind == {"prompt": "transcribe.text"}
    assert pipeline.outputs == {"image": "text2image.image", "description": "caption.text"}
    assert set(pipeline.inputs) == {"audio"}


def test_a_literal_is_a_constant_format_and_two_calls_of_a_task_get_two_names():
    text = 'a = text2image(prompt="a red house").image\nb = text2image(prompt="a blue boat").image'

    pipeline = plan_to_pipeline(text, TASKS, PIPELINES, {})

    assert [s.name for s in pipeline.steps] == ["text2image", "text2image_2"]
    assert pipeline_to_dict(pipeline)["steps"][0]["bind"] == {"prompt": {"format": "a red house"}}


def test_the_none_answer_is_no_pipeline_fits_with_its_reason():
    with pytest.raises(NoPipelineFits, match="no pipeline fits: nothing here books flights") as caught:
        plan_to_pipeline("none: nothing here books flights", TASKS, PIPELINES, {})
    assert caught.value.field == "request"


@pytest.mark.parametrize("text, message", [
    ("image = caption(image=input.photo).text", "not one of the files"),
    ("x = caption(image=input.audio).text", "wants image but 'input.audio' is audio"),
    ("x = caption(image=input.audio", "expected at ''"),
    ("x = nosuch(a=input.audio).y", "unknown task 'nosuch'"),
    ("x = input.audio", "an output must be a task's output"),
    ('x = text2image(prompt="").image', "empty text literal"),
    ("", "is not 'NAME = TERM'"),
])
def test_a_text_that_is_not_a_plan_is_an_invalid_pipeline(text, message):
    with pytest.raises(InvalidPipeline, match=message):
        plan_to_pipeline(text, TASKS, PIPELINES, {"audio": Kind.AUDIO})


def test_a_file_no_task_takes_is_refused_before_any_model_runs():
    check_files_usable(TASKS, {"photo": Kind.IMAGE, "clip": Kind.VIDEO, "voice": Kind.AUDIO})

    with pytest.raises(NoPipelineFits, match="no task in the catalogue takes a mesh file \\('chair'\\)"):
        check_files_usable(TASKS, {"photo": Kind.IMAGE, "chair": Kind.MESH})
    with pytest.raises(NoPipelineFits, match="takes an embedding file"):  # rank_embeddings is not planned
        check_files_usable(TASKS, {"query": Kind.EMBEDDING})
