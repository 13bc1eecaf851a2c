"""One distribution, `mmq.*` namespaces; the client side never imports torch."""

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_clients_and_tasks_do_not_import_torch():
    code = "import sys, mmq.clients, mmq.tasks; print(sorted(m for m in ('torch', 'transformers', " \
           "'diffusers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_base_install_does_not_require_model_libraries():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    assert not any(heavy in base for heavy in ("torch", "transformers", "diffusers"))
    assert any(dep.startswith("torch") for dep in project["optional-dependencies"]["workers"])


def test_a_folder_with_its_own_tasks_module_can_use_the_client(workers, sample_image, tmp_path):
    (tmp_path / "tasks.py").write_text("WHO = 'the app'\n")
    (tmp_path / "app.py").write_text(textwrap.dedent(f"""
        import tasks
        from mmq.clients import Client

        assert tasks.WHO == "the app"
        job = Client.from_env().submit("caption", image={str(sample_image)!r})
        print(job.wait(timeout_s=120).status.value)
    """))
    out = subprocess.run([sys.executable, "app.py"], cwd=tmp_path, env=workers.env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "succeeded"
