"""Weights on disk before anything starts: `mmq models pull|list`, and `mmq up --models hub`
refusing to start what is not on disk.

Faked: the hub. `tests/hub.py` stands in for it (the real one cannot be reached here), serving over
the hub's own protocol a repository laid out like stable-diffusion-v1-5: the diffusers folders in
float32 and as the float16 variant, and a single-file checkpoint at the root that no loader of
ours reads. The pulling, the cache and the worker's offline load are the real ones.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from diffusers import StableDiffusionPipeline

from mmq.clients.stack import StackState
from mmq.workers.diffusion.tiny import build_tiny_stable_diffusion
from mmq.workers.weights import select_files, weight_bytes
from tests.hub import HubStandIn

REPO = "test/sd-like-v1-5"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    build_tiny_stable_diffusion(repo)
    pipeline = StableDiffusionPipeline.from_pretrained(repo)
    pipeline.to(torch.float16).save_pretrained(repo, variant="fp16")  # beside the float32 files, as on the hub
    (repo / "v1-5-pruned-emaonly.safetensors").write_bytes(os.urandom(300_000))  # read by no loader of ours
    stand_in = HubStandIn({REPO: repo}).start()
    stand_in.folder = repo
    yield stand_in
    stand_in.stop()


def mmq(*args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "mmq.clients.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def env(hub, tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MMQ_", "AWS_", "HF_"))}
    return {**base, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "MMQ_DIFFUSION_MODEL": REPO,
            "MMQ_DATA_DIR": str(tmp_path / "data"), "MMQ_TORCH_THREADS": "1"}


def test_pull_fetches_only_what_the_loader_reads_once_and_list_shows_it(hub, env):
    before = mmq("models", "list", "diffusion", env={**env, "HF_HUB_OFFLINE": "1"})
    assert before.returncode == 0 and "missing" in before.stdout and "mmq models pull diffusion" in before.stdout

    hub.requests.clear()
    first = mmq("models", "pull", "diffusion", env=env)
    assert first.returncode == 0, first.stderr
    assert f"diffusion: {REPO}: " in first.stdout and "to fetch: " in first.stdout and "fetched in" in first.stdout
    assert "Fetching" in first.stderr  # huggingface_hub's progress bar
    fetched = sorted(path.removeprefix(REPO + "/") for path in hub.fetched())
    on_the_hub = {p.relative_to(hub.folder).as_posix(): 0 for p in hub.folder.rglob("*") if p.is_file()}
    assert fetched == sorted(select_files(on_the_hub, "diffusers"))  # the loader's files, and only those
    weights = [p for p in fetched if p.endswith(".safetensors")]
    assert weights and all(".fp16." in p for p in weights)  # the float16 variant, not the float32 files
    assert "v1-5-pruned-emaonly.safetensors" not in fetched and "model_index.json" in fetched
    assert {p.split("/")[0] for p in weights} == {"unet", "vae", "text_encoder", "safety_checker"}

    hub.requests.clear()
    again = mmq("models", "pull", "diffusion", env=env)
    assert again.returncode == 0 and "to fetch: 0 (0 B)" in again.stdout
    assert hub.fetched() == []  # a second pull fetches nothing

    listed = mmq("models", "list", "diffusion", env={**env, "HF_HUB_OFFLINE": "1"})
    [row] = [line for line in listed.stdout.splitlines() if line.startswith("diffusion")]
    assert row.split()[1:3] == ["on", "disk"] and REPO in row


def test_up_with_hub_models_refuses_what_is_not_on_disk_then_runs_what_was_pulled_offline(hub, env, tmp_path):
    data_dir = tmp_path / "stack"
    refused = mmq("up", "--models", "hub", "--only", "diffusion", "--no-gateway", "--no-flower",
                  "--data-dir", str(data_dir), env=env)
    assert refused.returncode == 1
    assert f"mmq: not on disk: diffusion ({REPO}); fetch them first" in refused.stderr
    assert "mmq models pull diffusion" in refused.stderr
    assert StackState.load(data_dir) is None  # nothing was started

    assert mmq("models", "pull", "diffusion", env=env).returncode == 0
    hub.requests.clear()
    try:
        up = mmq("up", "--models", "hub", "--only", "diffusion", "--no-gateway", "--no-flower",
                 "--data-dir", str(data_dir), env=env)
        assert up.returncode == 0, up.stderr + up.stdout
        run = mmq("run", "text2image", "prompt=a lighthouse", "width=64", "height=64", "steps=2", "--wait",
                  "--data-dir", str(data_dir), env=env)
        assert run.returncode == 0, run.stderr + run.stdout
        log = (data_dir / "logs" / "worker-diffusion.log").read_text()
        assert "safety checker: on" in log  # the pulled checker is loaded too
        assert hub.requests == []  # pulled workers load without touching the network
    finally:
        mmq("down", "--data-dir", str(data_dir), env=env)


def test_a_local_folder_needs_no_pull(env, tmp_path):
    folder = tmp_path / "sd"
    build_tiny_stable_diffusion(folder)
    shutil.rmtree(folder / "safety_checker")  # not every checkpoint ships one
    listed = mmq("models", "list", "diffusion", env={**env, "MMQ_DIFFUSION_MODEL": str(folder)})
    assert "on disk" in listed.stdout and "(local folder)" in listed.stdout
    pulled = mmq("models", "pull", "diffusion", env={**env, "MMQ_DIFFUSION_MODEL": str(folder)})
    assert pulled.returncode == 0 and "a local folder" in pulled.stdout


def test_the_clip_worker_needs_its_clip_and_its_clap_and_both_are_listed(tmp_path):
    from mmq.workers.clip.tiny import build_tiny_clip
    from mmq.workers.clip.tiny_clap import build_tiny_clap

    build_tiny_clip(tmp_path / "clip")
    build_tiny_clap(tmp_path / "clap")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MMQ_", "HF_"))}
    env = {**base, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}

    def needs(**models):
        done = subprocess.run([sys.executable, "-m", "mmq.workers.weights_cli", "needs", "--on-gpu", "clip"],
                              check=False, env={**env, **models}, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        [entry] = json.loads(done.stdout)  # one worker, one entry
        return entry

    both = needs(MMQ_CLIP_MODEL=str(tmp_path / "clip"), MMQ_CLIP_SOUND_MODEL=str(tmp_path / "clap"))
    clip_alone = needs(MMQ_CLIP_MODEL=str(tmp_path / "clip"), MMQ_CLIP_SOUND_MODEL="none")
    clap_bytes = weight_bytes(tmp_path / "clap", ["model.safetensors"], half=True)
    assert clap_bytes > 0 and both["weights_bytes"] == clip_alone["weights_bytes"] + clap_bytes
    assert both["model"] == f"{tmp_path / 'clip'} + {tmp_path / 'clap'}" and clip_alone["model"] == str(tmp_path / "clip")
    hub_ids = needs()  # the defaults, never pulled here: both named as missing
    assert hub_ids["on_disk"] is False and hub_ids["model"] == "openai/clip-vit-base-patch32 + laion/clap-htsat-unfused"

    listed = mmq("models", "list", "clip", env=env)
    rows = [line.split() for line in listed.stdout.splitlines() if line.startswith("clip")]
    assert [(row[1], row[3]) for row in rows] == [("missing", "openai/clip-vit-base-patch32"),
                                                  ("missing", "laion/clap-htsat-unfused")]
