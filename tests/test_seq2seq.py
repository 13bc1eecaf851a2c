"""`summarize` and `translate` through real worker processes: short text in one pass, long text in
chunks (seen in the step's progress), and bad input refused at submission or failed by name, after
which the same worker still serves.

The workers load tiny BART and NLLB models with random weights, built and saved like the real
checkpoints: their text is noise, so these tests check types, chunking, layout and errors. The
chunking itself is also checked alone, on a whitespace tokenization.
"""

from __future__ import annotations

import re

import pytest

from mmq.tasks import InvalidInput, JobStatus
from mmq.workers.seq2seq.chunking import join, split_by_tokens
from tests.conftest import served_client
from tests.outcomes import finished

SENTENCES = (
    "The city council met on Tuesday to discuss the new budget for schools and roads.",
    "Officials said the plan would be published next week after a public consultation.",
    "Several residents asked why the bridge repairs had been delayed for a second year.",
    "The mayor promised that work would start in the spring and finish before winter.",
    "A storm is expected to bring heavy rain and strong winds to the coast tonight.",
    "Forecasters advised people living near the river to prepare for possible flooding.",
    "The museum will open a new exhibition of paintings from the last century.",
    "Its director said the collection had never been shown together in one place.",
)
SHORT = " ".join(SENTENCES[:3])  # about 90 tokens: one chunk
PARAGRAPH = " ".join(SENTENCES)  # about 235 tokens: just under one chunk of the tiny models (246)
LONG = "\n\n".join([PARAGRAPH] * 6)  # about 1,400 tokens: six chunks or more


summarizer = served_client("summarize", scope="module")
translator = served_client("translate", scope="module")


def assert_still_serving(client, task):
    text_output = {"summarize": "summary", "translate": "translation"}[task]
    record = finished(client.submit(task, text=SHORT))
    assert record.outputs[text_output].strip()


# --- summarize -----------------------------------------------------------------------------------

def test_short_text_is_summarized_in_one_pass(summarizer):
    record = finished(summarizer.submit("summarize", text=SHORT))
    summary = record.outputs["summary"]
    assert isinstance(summary, str) and summary.strip()
    assert record.step_states["summarize"].progress == (1, 1)


def test_long_text_is_summarized_chunk_by_chunk_then_combined(summarizer):
    record = finished(summarizer.submit("summarize", text=LONG, max_tokens=60, min_tokens=10))
    assert record.outputs["summary"].strip()
    done, total = record.step_states["summarize"].progress
    assert done == total >= 7  # six chunks or more, then at least one pass over their summaries


def test_min_tokens_over_max_tokens_fails_naming_both_then_a_good_job_runs(summarizer):
    job = summarizer.submit("summarize", text=SHORT, max_tokens=40, min_tokens=80)
    record = finished(job, JobStatus.FAILED)
    assert record.error["step"] == "summarize" and record.error["type"] == "InvalidInput"
    assert "min_tokens (80)" in record.error["message"] and "max_tokens (40)" in record.error["message"]
    assert_still_serving(summarizer, "summarize")


def test_max_tokens_beyond_the_decoder_fails_naming_its_limit(summarizer):
    # The contract allows 1024; the tiny decoder has 256 positions (bart-large-cnn: 1024).
    record = finished(summarizer.submit("summarize", text=SHORT, max_tokens=1000), JobStatus.FAILED)
    assert record.error["message"] == "max_tokens must be at most 255 for this model but is 1000"
    assert_still_serving(summarizer, "summarize")


# --- translate -----------------------------------------------------------------------------------

def test_translation_defaults_to_english_into_french(translator):
    record = finished(translator.submit("translate", text=SHORT))
    assert isinstance(record.outputs["translation"], str) and record.outputs["translation"].strip()
    assert (record.inputs["source_language"], record.inputs["target_language"]) == ("en", "fr")
    assert record.step_states["translate"].progress == (1, 1)


@pytest.mark.parametrize("source, target", [("de", "es"), ("de-AT", "es-419"), ("deu", "spa_Latn"),
                                            ("zh-TW", "pt-BR"), ("fra_Latn", "en")])
def test_iso_639_1_bcp_47_and_the_models_own_codes_all_translate(translator, source, target):
    record = finished(translator.submit("translate", text=SHORT, source_language=source, target_language=target))
    assert record.outputs["translation"].strip()


def test_a_language_written_in_two_scripts_needs_its_script_named():
    from mmq.tasks.languages import for_nllb

    known = frozenset({"zho_Hans", "zho_Hant", "kas_Arab", "kas_Deva", "srp_Cyrl", "eng_Latn"})
    assert for_nllb("zh", known, field="f") == "zho_Hans" and for_nllb("zh-HK", known, field="f") == "zho_Hant"
    assert for_nllb("ks", known, field="f") == "kas_Arab" and for_nllb("ks-Deva", known, field="f") == "kas_Deva"
    with pytest.raises(InvalidInput, match=r"f: unknown language code 'sr-Latn'; the model knows e.g. srp_Cyrl"):
        for_nllb("sr-Latn", known, field="f")


def test_another_known_language_pair_translates(translator):
    job = translator.submit("translate", text=SHORT, source_language="deu_Latn", target_language="spa_Latn")
    assert finished(job).outputs["translation"].strip()


def test_long_text_is_translated_in_chunks_keeping_its_paragraphs(translator):
    text = " ".join([PARAGRAPH] * 3) + "\n\n" + SHORT  # one paragraph of about 700 tokens, then one short
    record = finished(translator.submit("translate", text=text))
    done, total = record.step_states["translate"].progress
    assert done == total >= 4  # the long paragraph in three chunks or more, the short one alone
    translation = record.outputs["translation"]
    assert translation.count("\n\n") == 1 and all(part.strip() for part in translation.split("\n\n"))


@pytest.mark.parametrize("field, code, suggested", [
    ("target_language", "xx_Yyyy", "eng_Latn"),  # nothing close: common codes
    ("source_language", "eng_Latx", "eng_Latn"),  # the same language in a script it has is suggested first
    ("target_language", "qq", "eng_Latn"),  # not a language at all
])
def test_an_unknown_language_code_fails_naming_it_then_a_good_job_runs(translator, field, code, suggested):
    record = finished(translator.submit("translate", text=SHORT, **{field: code}), JobStatus.FAILED)
    assert record.error["step"] == "translate" and record.error["type"] == "InvalidInput"
    message = record.error["message"]
    assert message.startswith(f"{field}: unknown language code '{code}'; the model knows e.g. {suggested}, ")
    assert_still_serving(translator, "translate")


# --- refused at submission -------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["summarize", "translate"])
@pytest.mark.parametrize("text, message", [
    ("", "text must not be empty"),
    (" \n\t ", "text must not be empty"),
    ("a" * 100_001, "text is 100001 characters, over the limit of 100000"),
])
def test_empty_or_overlong_text_is_refused_at_submission_then_a_good_job_runs(
    summarizer, translator, task, text, message
):
    client = {"summarize": summarizer, "translate": translator}[task]
    with pytest.raises(InvalidInput, match=re.escape(message)):
        client.submit(task, text=text)
    assert_still_serving(client, task)


# --- chunking alone --------------------------------------------------------------------------------

def word_starts(text: str) -> list[int]:
    """A whitespace tokenization: one token per word, starting where the word starts."""
    return [m.start() for m in re.finditer(r"\S+", text)]


def test_chunks_fit_the_budget_end_at_sentences_and_make_up_the_whole_text():
    text = "\n\n".join([PARAGRAPH] * 3)
    chunks = split_by_tokens(text, word_starts(text), budget=40)
    assert "".join(chunk.text + chunk.separator for chunk in chunks) == text
    assert all(len(chunk.text.split()) <= 40 for chunk in chunks)
    assert all(chunk.text.endswith(".") for chunk in chunks)  # every sentence here is under 40 words
    assert len(chunks) > len(text.split()) / 40


def test_a_sentence_longer_than_the_budget_is_cut_between_words():
    text = "word " * 25 + "end."
    chunks = split_by_tokens(text, word_starts(text), budget=10)
    assert [len(chunk.text.split()) for chunk in chunks] == [10, 10, 6]
    assert join(chunks, [chunk.text.upper() for chunk in chunks]) == text.upper().strip()


def test_break_lines_ends_a_chunk_at_every_line_and_join_keeps_the_layout():
    text = "First line.\nSecond line.\n\nA new paragraph."
    chunks = split_by_tokens(text, word_starts(text), budget=100, break_lines=True)
    assert [chunk.text for chunk in chunks] == ["First line.", "Second line.", "A new paragraph."]
    assert join(chunks, ["1", "2", "3"]) == "1\n2\n\n3"
    assert len(split_by_tokens(text, word_starts(text), budget=100)) == 1  # without: one chunk
