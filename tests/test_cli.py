"""The `mmq` command line against the embedded stack it starts: up (twice), run, jobs, keys, the
gateway (and the README's curl walk-through, run as written), down. Faked: the model hub (tiny
random models) and the GPU (CPU here)."""

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from mmq.clients.stack import StackState
from mmq.tasks.specialisation_specs import SPECIALISATIONS

ROOT = Path(__file__).resolve().parent.parent


def mmq(*args: str, data_dir: Path, cwd: Path, timeout: float = 300, **env_vars: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMQ_", "AWS_"))}
    env.update(HF_HUB_OFFLINE="1", MMQ_TORCH_THREADS="1", **env_vars)
    return subprocess.run([sys.executable, "-m", "mmq.clients.cli", *args, "--data-dir", str(data_dir)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def start(data_dir: Path, cwd: Path, only: str = "caption") -> Path:
    up = mmq("up", "--only", only, data_dir=data_dir, cwd=cwd)
    assert up.returncode == 0, up.stderr + up.stdout
    return data_dir


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    # Every specialisation, as a bare `mmq up` starts them.
    data_dir = start(tmp_path_factory.mktemp("cli") / "data", Path.cwd(), only=",".join(SPECIALISATIONS))
    yield data_dir
    down = mmq("down", data_dir=data_dir, cwd=Path.cwd())
    assert down.returncode == 0, down.stderr


def test_up_twice_reuses_the_stack_and_down_stops_exactly_it(tmp_path):
    import httpx

    own_stack = start(tmp_path / "data", tmp_path)
    state = StackState.load(own_stack)
    # Flower was named because it answers: a request right after `up` is answered, not refused.
    assert httpx.get(f"{state.flower_url}/api/workers", timeout=10).status_code == 401
    assert [p.name for p in state.processes] == ["redis", "seaweedfs", "gateway", "worker:caption", "flower"]
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


# The rest of the seed's catalogue, each from `mmq run` as a user types it (small sizes: CPU, tiny models).
CATALOGUE_RUNS = {
    "answer": ["image=@{image}", "question=What is on the roof?", "max_new_tokens=6"],
    "describe": ["image=@{image}", "max_new_tokens=6"],
    "depth": ["image=@{image}"],
    "segment": ["image=@{image}", "points=20,30", "points=40,30", "boxes=0,0,50,40"],
    "features": ["images=@{image}", "images=@{image}"],
    "speak": ["text=Hello there. How are you?"],
    "compose": ["prompt=a slow drum beat", "duration_s=0.5"],
    "text2video": ["prompt=a boat on a lake", "num_frames=2", "width=64", "height=64", "steps=2"],
    "text2mesh": ["prompt=a chair", "steps=2", "preview_size=32", "grid_size=64"],
    "slideshow": ["images=@{image}", "images=@{image}", "seconds_per_image=0.25"],
    "describe-and-speak": ["image=@{image}", "max_new_tokens=6"],
    "voice-command": ["audio=@{speech}", "width=64", "height=64", "steps=2", "duration_s=0.5"],
    "storyboard": ["text=A fox lives by a lake. It drinks there each day.", "width=64", "height=64", "steps=2",
                   "seconds_per_image=0.25"],
}


def test_the_rest_of_the_catalogue_runs_from_mmq_run_and_is_listed(local_stack, tmp_path, sample_image):
    from mmq.tasks.catalogue import lookup

    from .media_samples import speak

    speech = tmp_path / "command.wav"
    speak("a red house by the sea", speech)
    listed = mmq("pipelines", data_dir=local_stack, cwd=tmp_path)
    for name, args in CATALOGUE_RUNS.items():
        assert re.search(rf"^{re.escape(name)}  \((task|pipeline)", listed.stdout, flags=re.M), name
        filled = [arg.format(image=sample_image, speech=speech) for arg in args]
        run = mmq("run", name, *filled, "--wait", "--json", data_dir=local_stack, cwd=tmp_path)
        assert run.returncode == 0, (name, run.stderr)
        job = json.loads(run.stdout)
        assert job["status"] == "succeeded", (name, job["error"])
        assert set(job["outputs"]) == set(lookup(name).outputs), name
    # A 3D object downloads as its mesh and its preview, under their output names.
    mesh = json.loads(mmq("run", "text2mesh", "prompt=a lamp", *CATALOGUE_RUNS["text2mesh"][1:], "--wait", "--json",
                          data_dir=local_stack, cwd=tmp_path).stdout)
    got = mmq("jobs", "download", mesh["id"], "--out", str(tmp_path / "mesh"), data_dir=local_stack, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "mesh" / "mesh.ply").read_bytes().startswith(b"ply")
    assert Image.open(tmp_path / "mesh" / "preview.png").size == (32, 32)


def new_key(data_dir: Path, cwd: Path, tenant: str) -> dict:
    created = mmq("keys", "create", "--tenant", tenant, "--json", data_dir=data_dir, cwd=cwd)
    assert created.returncode == 0, created.stderr
    return json.loads(created.stdout)


def test_the_cli_through_the_gateway_with_keys(local_stack, tmp_path, sample_image):
    gateway = StackState.load(local_stack).gateway_url
    key = new_key(local_stack, tmp_path, "cli")
    assert key["key"].startswith("mmq_") and key["webhook_secret"]
    remote = {"MMQ_GATEWAY_URL": gateway, "MMQ_API_KEY": key["key"]}

    run = mmq("run", "remix", f"image=@{sample_image}", "width=64", "height=64", "steps=2", "--wait", "--json",
              data_dir=tmp_path / "elsewhere", cwd=tmp_path, **remote)  # no stack file: the gateway only
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout)
    assert job["status"] == "succeeded"
    assert re.search(r"text2image +succeeded +\[#+\] \d+/\d+", run.stderr), run.stderr  # progress bars
    listed = mmq("jobs", "list", "--json", data_dir=tmp_path / "elsewhere", cwd=tmp_path, **remote)
    assert job["id"] in [j["id"] for j in json.loads(listed.stdout)["jobs"]]
    download = mmq("jobs", "download", job["id"], "--out", str(tmp_path / "out"), data_dir=tmp_path / "elsewhere",
                   cwd=tmp_path, **remote)
    assert download.returncode == 0, download.stderr
    assert Image.open(tmp_path / "out" / "image.png").size == (64, 64)

    keys = mmq("keys", "list", "--json", data_dir=local_stack, cwd=tmp_path)
    assert {"id": key["id"], "tenant": "cli", "active": True}.items() <= next(
        k for k in json.loads(keys.stdout) if k["id"] == key["id"]).items()
    assert key["key"] not in keys.stdout
    assert mmq("keys", "revoke", key["id"], data_dir=local_stack, cwd=tmp_path).returncode == 0
    refused = mmq("jobs", "list", data_dir=tmp_path / "elsewhere", cwd=tmp_path, **remote)
    assert refused.returncode == 1 and f"API key {key['id']} was revoked" in refused.stderr


def readme_curl_walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    [block] = re.findall(r"```sh\n(.*?)```", readme, flags=re.S)
    return block


def test_the_readme_curl_walkthrough_runs_as_written(local_stack, tmp_path):
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "house.png").write_bytes((ROOT / "samples" / "house.png").read_bytes())
    env = {**os.environ, "GW": StackState.load(local_stack).gateway_url,
           "KEY": new_key(local_stack, tmp_path, "curl")["key"]}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_curl_walkthrough()], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "event: step.progress" in result.stdout and result.stdout.rstrip().splitlines()[-1].startswith("data:")
    assert "event: job.succeeded" in result.stdout
    assert Image.open(io.BytesIO((tmp_path / "remixed.png").read_bytes())).size == (128, 128)


def test_status_shows_every_specialisation_with_its_worker_and_queue(local_stack, tmp_path):
    result = mmq("status", "--json", data_dir=local_stack, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {q["queue"]: q["workers"] for q in report["queues"]} == {name: 1 for name in SPECIALISATIONS}
    assert sorted(w["specialisation"] for w in report["workers"]) == sorted(SPECIALISATIONS)
    text = mmq("status", data_dir=local_stack, cwd=tmp_path).stdout
    for name in SPECIALISATIONS:
        assert re.search(rf"^{name} +0 +1$", text, flags=re.M), text
        assert re.search(rf"^{name}-cpu-\d+@", text, flags=re.M), text
        assert mmq("ready", name, data_dir=local_stack, cwd=tmp_path).returncode == 0


def test_flower_shows_each_specialisations_worker_behind_a_password(local_stack):
    import httpx

    state = StackState.load(local_stack)
    user, password = state.env["MMQ_FLOWER_BASIC_AUTH"].split(":", 1)
    assert httpx.get(f"{state.flower_url}/api/workers", timeout=30).status_code == 401
    assert httpx.get(f"{state.flower_url}/api/workers", auth=(user, "wrong"), timeout=30).status_code == 401

    def workers() -> dict:
        # refresh=1: Flower asks the workers now, rather than answering from what it last heard.
        response = httpx.get(f"{state.flower_url}/api/workers", params={"refresh": 1}, auth=(user, password),
                             timeout=30)
        return response.json() if response.status_code == 200 else {}

    def lists_every_specialisation(found: dict) -> bool:
        return all(any(w.startswith(f"{name}-cpu-") for w in found) for name in SPECIALISATIONS)

    deadline = time.monotonic() + 120
    while not lists_every_specialisation(found := workers()):  # Flower asks the workers as it starts
        assert time.monotonic() < deadline, f"Flower lists {sorted(found)}"
        time.sleep(1)
    caption = next(w for w in found if w.startswith("caption-cpu-"))
    assert [q["name"] for q in found[caption]["active_queues"]] == ["caption"]
    metrics = httpx.get(f"{state.flower_url}/metrics", auth=(user, password), timeout=30)
    assert metrics.status_code == 200 and "flower_" in metrics.text


def required_inputs(schema: dict, files: dict[str, Path]) -> dict:
    """Only what a task or pipeline requires (and the least of its one-of inputs): everything else
    is its default, as a user's first run leaves it."""
    from mmq.tasks.fields import Kind

    samples = {Kind.IMAGE: files["image"], Kind.AUDIO: files["audio"], Kind.VIDEO: files["video"],
               Kind.TEXT: "A fox lives by a lake. It drinks there each day.", Kind.EMBEDDING: [[0.1, 0.2, 0.3]]}
    inputs = {}
    for name, field in schema.items():
        if field.required:
            inputs[name] = [samples[field.kind]] if field.many else samples[field.kind]
    return inputs


def test_every_task_and_built_in_pipeline_runs_with_only_its_required_inputs(local_stack, tmp_path, sample_image):
    from mmq.clients import Client
    from mmq.tasks import PIPELINES, TASKS, Settings

    from .media_samples import make_video, speak

    files = {"image": sample_image, "audio": tmp_path / "note.wav", "video": tmp_path / "clip.mp4"}
    speak("draw a red house by the sea", files["audio"])
    files["video"].write_bytes(make_video(seconds=2.0))
    one_of = {"embed": {"texts": ["a house"]}, "rank": {"texts": ["a house", "a boat"]},
              "segment": {"points": [[20, 30]]}}
    with Client(settings=Settings.from_env(StackState.load(local_stack).env)) as client:
        jobs = {name: client.submit(name, **required_inputs(spec.inputs, files), **one_of.get(name, {}))
                for name, spec in {**TASKS, **PIPELINES}.items()}
        ended = {name: job.wait(timeout_s=900) for name, job in jobs.items()}
    failed = {name: record.error for name, record in ended.items() if record.status.value != "succeeded"}
    assert not failed, failed
