"""The job page's static files: the 3D viewer and the three.js it imports, served by the gateway from
inside the package (no CDN, no internet), as JavaScript a browser runs as an ES module, and shipped
in the installed package. The browser side is tests/test_job_page.py.

Real: the gateway's ASGI app, driven in-process (FastAPI's TestClient); no server is needed.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mmq.clients.gateway.app import create_app
from mmq.tasks import Settings

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "clients" / "gateway" / "static"
THREE_VERSION = "0.187.0"  # THREE_VERSION in the Makefile (`make three`)


@pytest.fixture(scope="module")
def http() -> TestClient:
    return TestClient(create_app(Settings(), webhooks=False))


@pytest.mark.parametrize("path", ["mesh-viewer.js", "three/three.module.js", "three/three.core.js",
                                  "three/addons/controls/OrbitControls.js", "three/addons/loaders/PLYLoader.js",
                                  "three/addons/loaders/GLTFLoader.js"])
def test_modules_are_served_as_javascript(http: TestClient, path: str) -> None:
    response = http.get(f"/static/{path}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "max-age" in response.headers["cache-control"]
    assert response.content == (STATIC / path).read_bytes()


def test_the_pinned_three_is_vendored_with_its_licence(http: TestClient) -> None:
    assert http.get("/static/three/VERSION").text.strip() == THREE_VERSION
    assert f"REVISION = '{THREE_VERSION.split('.')[1]}'" in (STATIC / "three" / "three.core.js").read_text()
    licence = http.get("/static/three/LICENSE")
    assert licence.status_code == 200 and "MIT License" in licence.text and "three.js authors" in licence.text


@pytest.mark.parametrize("path", ["../page_routes.py", "three/../../job.html", "%2e%2e/app.py", ".hidden.js",
                                  "three/", "nowhere.js", "three/addons", "__init__.py"])
def test_nothing_else_is_served(http: TestClient, path: str) -> None:
    assert http.get(f"/static/{path}").status_code == 404


def test_no_file_the_page_loads_names_another_host() -> None:
    # An absolute URL in the page or the viewer would be fetched from elsewhere (the SVG namespace is a name).
    page = (STATIC / "mesh-viewer.js").read_text() + (ROOT / "clients" / "gateway" / "job.html").read_text()
    assert re.findall(r"""["'](?:https?:)?//[^"']*""", page) == ['"http://www.w3.org/2000/svg']
    imports = {module.name: re.findall(r"""^\s*(?:import|export)\b[^;]*?\bfrom\s+['"]([^'"]+)['"]""",
                                       module.read_text(), re.MULTILINE)
               for module in (STATIC / "three").rglob("*.js")}
    assert imports["GLTFLoader.js"] == ["three", "../utils/BufferGeometryUtils.js", "../utils/SkeletonUtils.js"]
    assert all(name == "three" or name.startswith(".") for names in imports.values() for name in names), imports


def test_every_static_file_is_package_data() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "mmq.clients.gateway"]
    files = [path.relative_to(STATIC.parent).as_posix() for path in STATIC.rglob("*") if path.is_file()]
    assert files and all(any(fnmatch.fnmatchcase(f, g) and f.count("/") == g.count("/") for g in globs)
                         for f in files), (files, globs)
