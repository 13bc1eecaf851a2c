"""The `mmq` command line against the embedded stack it starts: up (twice), run, jobs, down."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmq.clients.stack import StackState


def mmq(*args: str, data_dir: Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMQ_", "AWS_"))}
    env.update(HF_HUB_OFFLINE="1", MMQ_TORCH_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mmq.clients.cli", *args, "--data-dir", str(data_dir)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def start(data_dir: Path, cwd: Path) -> Path:
    up = mmq("up", "--only", "caption", data_dir=data_dir, cwd=cwd)
    assert up.returncode == 0, up.stderr + up.stdout
    return data_dir


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    data_dir = start(tmp_path_factory.mktemp("cli") / "data", Path.cwd())
    yield data_dir
    down = mmq("down", data_dir=data_dir, cwd=Path.cwd())
    assert down.returncode == 0, down.stderr


def test_up_twice_reuses_the_stack_and_down_stops_exactly_it(tmp_path):
    own_stack = start(tmp_path / "data", tmp_path)
    state = StackState.load(own_stack)
    assert [p.name for p in state.processes] == ["redis", "seaweedfs", "worker:caption"]
    again = mmq("up", "--only", "caption", data_dir=own_stack, cwd=tmp_path)
    assert again.returncode == 0 and "already up" in again.stdout
    assert StackState.load(own_stack).processes == state.processes

    down = mmq("down", data_dir=own_stack, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert all(f"stopped {p.name} (pid {p.pid})" in down.stdout for p in state.processes)
    assert not any(p.running() for p in state.processes)
    assert StackState.load(own_stack) is None


def test_run_wait_json_then_jobs_get(local_stack, tmp_path, sample_image):
    run = mmq("run", "caption", f"image=@{sample_image}", "max_new_tokens=12", "--wait", "--json",
              data_dir=local_stack, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout)
    assert set(job) >= {"id", "status", "outputs", "error"}
    assert job["status"] == "succeeded" and job["error"] is None and job["outputs"]["text"]

    got = mmq("jobs", "get", job["id"], "--json", data_dir=local_stack, cwd=tmp_path)
    assert got.returncode == 0 and json.loads(got.stdout)["outputs"] == job["outputs"]


def test_bad_input_on_the_command_line_exits_2_naming_it(local_stack, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    cases = [
        (["run", "caption", f"image=@{notes}"], "image: notes.txt is not an image"),
        (["run", "text2image", "prompt=a house", "steps=many"], "steps must be an integer, got 'many'"),
        (["run", "capton"], "did you mean 'caption'"),
        (["run", "caption", "image"], "inputs are key=value or key=@file"),
    ]
    for args, message in cases:
        result = mmq(*args, data_dir=local_stack, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    missing = mmq("jobs", "get", "no-such-job", data_dir=local_stack, cwd=tmp_path)
    assert missing.returncode == 1 and "no job with id 'no-such-job'" in missing.stderr


def test_pipelines_lists_every_task_and_pipeline_with_inputs(tmp_path):
    listed = mmq("pipelines", "--json", data_dir=tmp_path, cwd=tmp_path)
    catalogue = {entry["name"]: entry for entry in json.loads(listed.stdout)}
    assert {"remix", "caption", "text2image"} <= catalogue.keys()
    assert catalogue["text2image"]["inputs"]["width"]["multiple_of"] == 8
