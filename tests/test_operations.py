"""What operators see: Prometheus metrics moving with the queue, `mmq status`, `mmq ready`.
Real processes (Redis, S3, a caption worker, the `mmq metrics` exporter); faked: the model hub
(tiny random models) and the GPU (CPU here, so no GPU memory is reported)."""

import re
import subprocess
import sys

import httpx

from mmq.tasks import JobStatus
from mmq.tasks.processes import die_with_parent
from tests.conftest import free_port


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus text exposition, or None."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if labels else ''} (\S+)$"
    match = re.search(pattern, text, flags=re.M)
    return float(match.group(1)) if match else None


def mmq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmq.clients.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_metrics_follow_the_queue_and_the_jobs(make_stack, start_worker, sample_image, tmp_path):
    stack = make_stack()
    port = free_port()
    exporter = subprocess.Popen([sys.executable, "-m", "mmq.clients.cli", "metrics", "--host", "127.0.0.1",
                                 "--port", str(port)], env=stack.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    try:
        assert "mmq metrics on" in exporter.stdout.readline().decode()
        scrape = lambda: httpx.get(f"http://127.0.0.1:{port}/metrics").text  # noqa: E731

        assert sample(scrape(), "mmq_queue_depth", queue="caption") == 0
        with stack.client() as client:
            jobs = [client.submit("caption", image=sample_image, max_new_tokens=5) for _ in range(3)]
            queued = scrape()
            assert sample(queued, "mmq_queue_depth", queue="caption") == 3  # no caption worker yet
            assert sample(queued, "mmq_jobs_total", status="created") == 3
            assert sample(queued, "mmq_jobs_in_progress") == 3
            assert sample(queued, "mmq_workers", specialisation="caption") == 0
            assert mmq("ready", "caption", env=stack.env).returncode == 1  # not ready: no such worker here

            start_worker(stack, "caption")
            assert all(job.wait(timeout_s=120).status is JobStatus.SUCCEEDED for job in jobs)
        done = scrape()
        assert sample(done, "mmq_queue_depth", queue="caption") == 0
        assert sample(done, "mmq_jobs_total", status="succeeded") == 3
        assert sample(done, "mmq_jobs_in_progress") == 0
        assert sample(done, "mmq_step_duration_seconds_count", task="caption") == 3
        assert sample(done, "mmq_step_duration_seconds_bucket", task="caption", le="+Inf") == 3
        assert sample(done, "mmq_step_duration_seconds_sum", task="caption") > 0
        assert sample(done, "mmq_workers", specialisation="caption") == 1
        assert re.search(r'^mmq_model_load_seconds\{worker="caption-cpu-\d+@[^"]+",specialisation="caption",'
                         r'model="tiny",device="cpu"\} [0-9.]+$', done, flags=re.M)
        assert "# TYPE mmq_step_duration_seconds histogram" in done
        assert mmq("ready", "caption", env=stack.env).returncode == 0
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)


def test_status_names_queues_workers_and_recent_failures(make_stack, start_worker, tmp_path):
    import json

    stack = make_stack()
    start_worker(stack, "caption")
    notes = tmp_path / "notes.png"
    notes.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really an image")  # passes the sniff, fails the decode
    with stack.client() as client:
        failed = client.submit("caption", image=notes).wait(timeout_s=60)
        assert failed.status is JobStatus.FAILED
        client.submit("text2image", prompt="nobody serves diffusion here")
    report = json.loads(mmq("status", "--json", env=stack.env).stdout)
    depths = {q["queue"]: q for q in report["queues"]}
    assert depths["diffusion"] == {"queue": "diffusion", "depth": 1, "workers": 0}
    assert depths["caption"] == {"queue": "caption", "depth": 0, "workers": 1}
    [worker] = report["workers"]
    assert worker["specialisation"] == "caption" and worker["model"] == "tiny" and worker["device"] == "cpu"
    assert [f["id"] for f in report["recent_failures"]] == [failed.id]
    assert report["recent_failures"][0]["error"]["step"] == "caption"
    text = mmq("status", env=stack.env).stdout
    assert re.search(r"^diffusion +1 +0$", text, flags=re.M) and "caption-cpu-" in text
    assert re.search(rf"failed \S+ {failed.id} caption: step 'caption'", text), text
