"""The job page, in a real browser: headless Chromium, driven by Selenium, follows a remix job.

Real: the gateway process, Redis, the SeaweedFS S3 server the browser loads images from, the
caption and diffusion Celery workers, Chromium and chromedriver. Faked: the model hub and the GPU;
the workers run tiny randomly initialised models of the real architectures, on CPU. Nothing here
skips: without Chromium the test fails and says which Debian packages to install.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parent.parent
JOB_TIMEOUT_S = 120
IMAGE_SIZE = 64


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.fail("headless Chromium is needed: apt-get install chromium chromium-driver "
                    f"(found chromium={chromium}, chromedriver={chromedriver})")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # WebGL (the 3D viewer) with no GPU: Chromium's software renderer, SwiftShader through ANGLE, which
    # newer Chromium no longer falls back to on its own.
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("MMQ_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def submit_remix(http: httpx.Client, image: Path) -> dict[str, Any]:
    """Upload the image through a presigned URL, as an HTTP client does, and submit a remix of it."""
    upload = http.post("/v1/uploads", json={"media_type": "image/png"})
    assert upload.status_code == 201, upload.text
    put = httpx.put(upload.json()["url"], content=image.read_bytes(), headers={"Content-Type": "image/png"})
    assert put.status_code in (200, 201, 204), put.text
    inputs = {"image": upload.json()["input"], "steps": 4, "width": IMAGE_SIZE, "height": IMAGE_SIZE,
              "seed": 3}
    job = http.post("/v1/jobs", json={"pipeline": "remix", "inputs": inputs})
    assert job.status_code == 201, job.text
    return job.json()


def status_word(driver: webdriver.Chrome) -> str | None:
    elements = driver.find_elements(By.ID, "job-status")
    return elements[0].text if elements else None


def test_job_page_follows_a_remix_to_its_image(gateway: Any, sample_image: Path,
                                               browser: webdriver.Chrome) -> None:
    # given a remix job submitted over HTTP, and its page opened at once, while it may still run
    key = gateway.new_key("page-tenant")
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        job = submit_remix(http, sample_image)
        browser.get(gateway.url + job["links"]["page"])

        # when the job ends, the page says so without being reloaded
        ended = WebDriverWait(browser, JOB_TIMEOUT_S).until(
            lambda d: status_word(d) if status_word(d) in ("succeeded", "failed", "cancelled") else None,
            message=f"the page never showed the job ending within {JOB_TIMEOUT_S} s")
        final = http.get(f"/v1/jobs/{job['id']}").json()
    assert ended == "succeeded", f"job ended {ended}: {final.get('error')}\n{gateway.log()[-3000:]}"

    # then the graph shows caption, then text2image one column to its right, both succeeded
    caption = browser.find_element(By.CSS_SELECTOR, '.step[data-step="caption"]')
    text2image = browser.find_element(By.CSS_SELECTOR, '.step[data-step="text2image"]')
    assert caption.get_attribute("data-status") == "succeeded"
    assert text2image.get_attribute("data-status") == "succeeded"
    assert text2image.location["x"] > caption.location["x"] + caption.size["width"]

    # and the generated image really loaded from S3, at the size asked for
    image = browser.find_element(By.CSS_SELECTOR, '#outputs [data-output="image"] img')
    natural_width = WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image),
        message="the output image did not load from its presigned URL")
    assert natural_width == IMAGE_SIZE
    assert image.get_attribute("src").startswith(gateway.stack.env["MMQ_S3_ENDPOINT_URL"] + "/")

    # and the caption is shown as the very text the API returns
    shown = browser.find_element(By.CSS_SELECTOR, '#outputs [data-output="caption"]')
    assert shown.get_property("textContent") == final["outputs"]["caption"]

    screenshot = artifacts_dir() / "job-page.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 0


# One job whose outputs are a 3D mesh with its preview image, speech and a video: the page must show
# the preview, play the sound and the video from S3, and draw the mesh in its 3D viewer.
MEDIA_SPEC = {
    "name": "media-page",
    "inputs": {"prompt": {"kind": "text"}, "steps": {"kind": "integer", "default": 2},
               "preview_size": {"kind": "integer", "default": 32}, "grid_size": {"kind": "integer", "default": 64},
               "seconds_per_image": {"kind": "number", "default": 0.5}},
    "steps": [
        {"name": "object", "task": "text2mesh",
         "bind": {"prompt": "input.prompt", "steps": "input.steps", "preview_size": "input.preview_size",
                  "grid_size": "input.grid_size"}},
        {"name": "voice", "task": "speak", "bind": {"text": "input.prompt"}},
        {"name": "turntable", "task": "slideshow",
         "bind": {"images": "object.preview", "seconds_per_image": "input.seconds_per_image"}},
    ],
    "outputs": {"mesh": "object.mesh", "preview": "object.preview", "speech": "voice.audio",
                "video": "turntable.video"},
}


def media_ready(driver: webdriver.Chrome, selector: str, script: str) -> Any:
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found and driver.execute_script(script, found[0])


def test_job_page_shows_a_preview_plays_sound_and_video_and_turns_the_mesh(gateway: Any, serve: Any,
                                                                            browser: webdriver.Chrome) -> None:
    for name in ("text2mesh", "speak", "media"):
        serve(name)
    key = gateway.new_key("page-media")
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        created = http.post("/v1/jobs", json={"pipeline": MEDIA_SPEC, "inputs": {"prompt": "a red chair"}})
        assert created.status_code == 201, created.text
        job = created.json()
        browser.get(gateway.url + job["links"]["page"])
        ended = WebDriverWait(browser, JOB_TIMEOUT_S * 2).until(
            lambda d: status_word(d) if status_word(d) in ("succeeded", "failed", "cancelled") else None,
            message="the page never showed the job ending")
        final = http.get(f"/v1/jobs/{job['id']}").json()
    assert ended == "succeeded", final.get("error")

    preview = '#outputs [data-output="preview"] img'
    width = WebDriverWait(browser, 30).until(
        lambda d: media_ready(d, preview, "return arguments[0].complete && arguments[0].naturalWidth"),
        message="the 3D preview did not load")
    assert width == 32
    # readyState >= 1: the browser fetched the file from S3 and read its duration (metadata).
    speech = WebDriverWait(browser, 30).until(
        lambda d: media_ready(d, '#outputs [data-output="speech"] audio',
                              "return arguments[0].readyState >= 1 && arguments[0].duration"),
        message="the audio player never read the WAV")
    assert speech > 0
    video_width = WebDriverWait(browser, 30).until(
        lambda d: media_ready(d, '#outputs [data-output="video"] video',
                              "return arguments[0].readyState >= 1 && arguments[0].videoWidth"),
        message="the video player never read the MP4 (H.264)")
    assert video_width == 32
    link = browser.find_element(By.CSS_SELECTOR, '#outputs [data-output="mesh"] a.download')
    s3 = gateway.stack.env["MMQ_S3_ENDPOINT_URL"]
    assert "model/ply" in link.find_element(By.XPATH, "..").text and link.get_attribute("href").startswith(s3 + "/")

    # and the mesh is drawn in the 3D viewer: its canvas differs from the clear colour over a real area
    viewer = browser.find_element(By.CSS_SELECTOR, '#outputs [data-output="mesh"] .mesh-viewer')
    state = WebDriverWait(browser, 60).until(lambda d: viewer.get_attribute("data-viewer") in ("rendered", "failed")
                                             and viewer.get_attribute("data-viewer"),
                                             message="the 3D viewer never reported a frame")
    assert state == "rendered", viewer.text
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", viewer)  # a screenshot shows the viewport only
    shot = Image.open(io.BytesIO(viewer.find_element(By.TAG_NAME, "canvas").screenshot_as_png)).convert("RGB")
    (artifacts_dir() / "job-page-mesh.png").write_bytes(viewer.screenshot_as_png)
    assert browser.save_screenshot(str(artifacts_dir() / "job-page-media.png"))
    drawn = mesh_pixels(shot)
    assert drawn["share"] > 0.05 and drawn["colours"] > 16, drawn

    # and everything the page fetched came from the gateway (three.js included) or from S3
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert f"{gateway.url}/static/three/three.module.js" in fetched, fetched
    assert [url for url in fetched if not url.startswith((gateway.url + "/", s3 + "/"))] == []


VIEWER_BACKGROUND = (0xF3, 0xF4, 0xF6)  # BACKGROUND in clients/gateway/static/mesh-viewer.js


def mesh_pixels(shot: Image.Image) -> dict[str, float]:
    """How much of a viewer screenshot is not the clear colour, and in how many distinct colours (a lit,
    shaded mesh has many; a flat fill or an error box has few)."""
    pixels = list(shot.get_flattened_data())
    drawn = [p for p in pixels if max(abs(a - b) for a, b in zip(p, VIEWER_BACKGROUND)) > 24]
    return {"share": len(drawn) / len(pixels), "colours": len(set(drawn))}


def test_the_api_and_the_page_say_why_a_job_waits(make_stack, browser, tmp_path) -> None:
    from tests.conftest import launch_gateway
    from tests.test_model_lifecycle import spawn_worker

    # given a queue whose only worker could not load its model
    stack = make_stack(MMQ_SUMMARIZE_MODEL=str(tmp_path / "nowhere"))
    assert spawn_worker(stack, "summarize", tmp_path / "worker.log").wait(timeout=120) == 4
    gateway = launch_gateway(stack, tmp_path)
    try:
        key = gateway.new_key("waiting-tenant")
        with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            # when a job is submitted to it
            job = http.post("/v1/jobs", json={"pipeline": "summarize", "inputs": {"text": "A long day. It ended."}})
            assert job.status_code == 201, job.text
            # then its view and its page say why it waits, with the load error
            why = f"no summarize worker is ready: model folder {tmp_path / 'nowhere'} does not exist"
            assert http.get(f"/v1/jobs/{job.json()['id']}").json()["waiting"] == why
            browser.get(gateway.url + job.json()["links"]["page"])
            shown = WebDriverWait(browser, 30).until(
                lambda d: (e := d.find_element(By.ID, "job-waiting")).is_displayed() and e.text,
                message="the page never said why the job waits")
            assert why in shown and status_word(browser) == "queued"
    finally:
        from mmq.clients.servers import stop

        stop(gateway.process.pid, timeout_s=20)


def canvas_shot(canvas: Any) -> Image.Image:
    return Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB")


def viewer_states(driver: webdriver.Chrome, names: Any) -> dict[str, str] | None:
    """Each named output's viewer state, once every one has finished (drawn or failed)."""
    states = {name: media_ready(driver, f'#outputs [data-output="{name}"] .mesh-viewer',
                                "return arguments[0].dataset.viewer") for name in names}
    return states if all(state in ("rendered", "failed") for state in states.values()) else None


def tiny_glb() -> bytes:
    """A glTF binary of an octahedron, a colour per vertex: three's GLTFLoader, not PLYLoader, draws it."""
    corners = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    colours = [(0.9, 0.1, 0.1), (0.1, 0.7, 0.2), (0.1, 0.2, 0.9), (0.9, 0.8, 0.1), (0.8, 0.2, 0.8), (0.1, 0.8, 0.8)]
    faces = [(0, 2, 4), (2, 1, 4), (1, 3, 4), (3, 0, 4), (2, 0, 5), (1, 2, 5), (3, 1, 5), (0, 3, 5)]
    positions = b"".join(struct.pack("<3f", *p) for p in corners)
    rgb = b"".join(struct.pack("<3f", *c) for c in colours)
    indices = b"".join(struct.pack("<3H", *f) for f in faces)
    binary = positions + rgb + indices + b"\0" * (-len(indices) % 4)
    views = [(0, len(positions)), (len(positions), len(rgb)), (len(positions) + len(rgb), len(indices))]
    document = {
        "asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "COLOR_0": 1}, "indices": 2}]}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": [{"buffer": 0, "byteOffset": offset, "byteLength": length} for offset, length in views],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": 6, "type": "VEC3", "min": [-1, -1, -1], "max": [1, 1, 1]},
            {"bufferView": 1, "componentType": 5126, "count": 6, "type": "VEC3"},
            {"bufferView": 2, "componentType": 5123, "count": 24, "type": "SCALAR"},
        ],
    }
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<I4s", len(text), b"JSON") + text + struct.pack("<I4s", len(binary), b"BIN\0") + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


# A binary PLY cut short: its header promises 1000 vertices, its body holds a few bytes.
BROKEN_PLY = (b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\nproperty float x\nproperty float y\n"
              b"property float z\nelement face 1000\nproperty list uchar int vertex_index\nend_header\n\0\0\x80?")


def test_job_page_draws_a_gltf_mesh_and_says_why_a_broken_mesh_cannot_be_shown(make_stack, browser, tmp_path) -> None:
    from mmq.clients.direct import DirectTransport
    from mmq.clients.servers import stop
    from mmq.tasks.records import JobStatus
    from tests.conftest import launch_gateway

    # given a finished job (on a stack of its own, with no worker) whose outputs are a glTF binary
    # mesh and a broken PLY, made deterministic by writing them as its outputs
    stack = make_stack()
    direct = DirectTransport(stack.settings)
    gateway = launch_gateway(stack, tmp_path)
    try:
        key = gateway.new_key("mesh-tenant")
        job_id = direct.submit("caption", {"image": (ROOT / "samples" / "house.png").read_bytes()}, owner="mesh-tenant")
        outputs = {"solid": direct.store.put_bytes(tiny_glb(), "model/gltf-binary").to_dict(),
                   "broken": direct.store.put_bytes(BROKEN_PLY, "model/ply").to_dict()}
        assert direct.jobs.finish(job_id, JobStatus.SUCCEEDED, outputs=outputs)
        page = httpx.get(f"{gateway.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"},
                         timeout=30).json()

        # when its page is opened (it fetches the job, then draws the outputs)
        browser.get(gateway.url + page["links"]["page"])
        states = WebDriverWait(browser, 60).until(lambda d: viewer_states(d, outputs),
                                                  message="the 3D viewers never finished")
        viewers = {name: browser.find_element(By.CSS_SELECTOR, f'#outputs [data-output="{name}"] .mesh-viewer')
                   for name in outputs}
    finally:
        direct.close()
        stop(gateway.process.pid, timeout_s=20)

    # then the glTF mesh is drawn in its colours, and the broken one says why it is not, in words
    assert states == {"solid": "rendered", "broken": "failed"}, states
    message = viewers["broken"].text
    assert message.startswith("Cannot show the 3D mesh here (") and "download link below still works" in message, message
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", viewers["solid"])
    canvas = viewers["solid"].find_element(By.TAG_NAME, "canvas")
    first = canvas_shot(canvas)
    drawn = mesh_pixels(first)
    assert drawn["share"] > 0.05 and drawn["colours"] > 16, drawn

    # and a drag turns it, a scroll brings it closer
    ActionChains(browser).click_and_hold(canvas).move_by_offset(120, 30).release().perform()
    turned = canvas_shot(canvas)
    assert sum(1 for a, b in zip(first.get_flattened_data(), turned.get_flattened_data()) if a != b) > 1000
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, -600).perform()
    closer = WebDriverWait(browser, 10).until(lambda d: (share := mesh_pixels(canvas_shot(canvas))["share"]) >
                                              drawn["share"] * 1.3 and share, message="scrolling did not zoom in")
    assert closer > drawn["share"]
    assert browser.save_screenshot(str(artifacts_dir() / "job-page-meshes.png"))
