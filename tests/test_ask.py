"""Asking end to end: a request in words is planned by a real `plan` worker (a tiny random causal
LM of the real architecture: its plans are valid, whatever they say) and run as one job.

Real: Redis, SeaweedFS, the worker processes of the plan and of every task it names, the gateway,
the CLI. Faked: the model hub (tiny models). What a plan names depends on the tiny model's random
weights, so each test reads the plan first (a dry run, which must be what the ask then runs: the
decoding is greedy) and starts the workers it needs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from mmq.clients import Client
from mmq.tasks.catalogue import TASKS
from mmq.tasks.records import JobStatus
from mmq.tasks.specfiles import pipeline_from_dict
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import Stack
from tests.test_job_page import browser  # noqa: F401 - the fixture: headless Chromium

ROOT = Path(__file__).resolve().parent.parent
VOICE_NOTE = ROOT / "samples" / "voice-note.wav"
REQUEST = "turn this voice note into a picture and describe it"
TIMEOUT_S = 300


def planned(client: Client, request: str, **inputs: object) -> dict:
    record = client.ask(request, dry_run=True, **inputs).wait(timeout_s=TIMEOUT_S)
    assert record.status is JobStatus.SUCCEEDED, record.error
    return record.outputs["pipeline"]


def serve_plan(serve: Callable[[str], Stack], plan: dict) -> None:
    for step in pipeline_from_dict(plan, TASKS).steps:
        serve(TASKS[step.task].specialisation)


def test_an_ask_runs_its_plan_as_the_rest_of_the_same_job(serve: Callable[[str], Stack]) -> None:
    stack = serve("plan")
    with stack.client() as client:
        plan = planned(client, REQUEST, audio=VOICE_NOTE)
        serve_plan(serve, plan)
        job = client.ask(REQUEST, audio=VOICE_NOTE)
        record = job.wait(timeout_s=TIMEOUT_S)
        events = list(job.events())
    assert record.status is JobStatus.SUCCEEDED, record.error
    pipeline = pipeline_from_dict(plan, TASKS)
    assert record.outputs["plan"] == plan  # what the dry run showed is what ran
    assert [s.name for s in record.steps] == ["plan", *(s.name for s in pipeline.ordered())]
    assert all(record.step_states[s.name].status is JobStatus.SUCCEEDED for s in record.steps)
    assert set(record.outputs) == {"plan", *pipeline.outputs}
    assert record.inputs["audio"]["media_type"] == "audio/wav" and record.inputs["files"] == {"audio": "audio"}
    # One job from the first event to the last: the planned steps' events follow the plan's.
    assert events[-1] == {"type": "job", "status": "succeeded"}


def test_a_file_no_task_takes_fails_the_ask_saying_no_pipeline_fits(serve: Callable[[str], Stack],
                                                                     tmp_path: Path) -> None:
    depth_map = tmp_path / "depth.npy"
    np.save(depth_map, np.zeros((4, 4), dtype=np.float32))
    with serve("plan").client() as client:
        record = client.ask("make this into a song", data=depth_map).wait(timeout_s=TIMEOUT_S)
    assert record.status is JobStatus.FAILED
    assert record.error["type"] == "NoPipelineFits" and "data" in record.error["message"], record.error
    assert [s.name for s in record.steps] == ["plan"]  # nothing was planned, so nothing was added


def test_an_ask_cancelled_while_it_plans_runs_nothing_after(serve: Callable[[str], Stack]) -> None:
    with serve("plan").client() as client:
        job = client.ask(REQUEST, audio=VOICE_NOTE)
        assert job.cancel()
        time.sleep(2)  # a plan step that was running stops at its next token; none is added
        record = job.record()
    assert record.status is JobStatus.CANCELLED
    assert [s.name for s in record.steps] == ["plan"]


def test_the_gateway_plans_and_asks_its_sdk_too_and_the_job_page_shows_the_plan(
        serve: Callable[[str], Stack], gateway, sample_image: Path, browser) -> None:  # noqa: F811
    serve("plan")
    key = gateway.new_key("asker")
    with Client(gateway_url=gateway.url, api_key=key) as remote:
        plan = planned(remote, "describe this photo", photo=sample_image)
    assert pipeline_from_dict(plan, TASKS).inputs.keys() <= {"photo"}
    serve_plan(serve, plan)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as http:
        photo = http.post("/v1/uploads", json={"media_type": "image/png"}).json()
        put = httpx.put(photo["url"], content=sample_image.read_bytes(), headers={"Content-Type": "image/png",
                                                                                **(photo.get("headers") or {})})
        assert put.status_code in (200, 201, 204), put.text
        only_plan = http.post("/v1/plans", json={"request": "describe this photo", "inputs": {"photo": photo["input"]}})
        asked = http.post("/v1/jobs", json={"ask": "describe this photo", "inputs": {"photo": photo["input"]}})
        both = http.post("/v1/jobs", json={"ask": "describe it", "pipeline": "caption", "inputs": {}})
        assert only_plan.status_code == 201 and asked.status_code == 201, (only_plan.text, asked.text)
        assert both.status_code == 422 and "exactly one" in both.text
        with Client(gateway_url=gateway.url, api_key=key) as remote:
            record = remote.job(asked.json()["id"]).wait(timeout_s=TIMEOUT_S)
            plan_only = remote.job(only_plan.json()["id"]).wait(timeout_s=TIMEOUT_S)
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert record.outputs["plan"] == plan == plan_only.outputs["pipeline"]
    assert record.steps[0].name == "plan" and len(record.steps) == 1 + len(plan["steps"])

    # The job page shows the plan beside the steps: the request, then each planned step as a call.
    browser.get(gateway.url + asked.json()["links"]["page"])
    shown = WebDriverWait(browser, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#plan li[data-plan-step]"), message="no plan on the job page")
    assert [li.get_attribute("data-plan-step") for li in shown] == [step["name"] for step in plan["steps"]]
    assert shown[0].text.startswith(f"{plan['steps'][0]['name']} = {plan['steps'][0]['task']}(")
    assert "describe this photo" in browser.find_element(By.ID, "plan").text
    assert browser.find_elements(By.CSS_SELECTOR, '.step[data-step="plan"]')  # and the plan is a step


def test_mmq_ask_shows_the_plan_then_the_job(serve: Callable[[str], Stack]) -> None:
    stack = serve("plan")
    with stack.client() as client:
        plan = planned(client, REQUEST, audio=VOICE_NOTE)
    serve_plan(serve, plan)

    def mmq(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mmq.clients.cli", "ask", REQUEST, f"audio=@{VOICE_NOTE}", *args],
                              env=stack.env, capture_output=True, text=True, timeout=TIMEOUT_S)

    dry = mmq("--dry-run")
    assert dry.returncode == 0, dry.stderr
    shown = [f"  {step['name']} = {step['task']}(" for step in plan["steps"]]
    assert dry.stdout.startswith("plan:\n") and all(line in dry.stdout for line in shown), dry.stdout
    waited = mmq("--wait", "--quiet")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.startswith("plan:\n") and "(ask): succeeded" in waited.stdout, waited.stdout
    bad = mmq("files=@" + str(VOICE_NOTE), "--dry-run")
    assert bad.returncode == 2 and "'files'" in bad.stderr
