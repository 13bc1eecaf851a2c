"""The job page's own files: its 3D viewer and the three.js it is built on, shipped inside the package
(`static/`, refreshed by `make three`) so that the page needs nothing from the internet. Public, like
the page itself, and not part of the API: absent from the OpenAPI document."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import APIRouter, Response

router = APIRouter(include_in_schema=False)

# Only these kinds are served. ES modules must come as JavaScript: `text/javascript`, whatever the
# host's mimetypes table says about `.js`.
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", "": "text/plain; charset=utf-8"}
CACHE_CONTROL = "public, max-age=3600"  # the files change only with a new release of the package


@router.get("/static/{path:path}")
def static_file(path: str) -> Response:
    found = _find(path)
    if found is None:
        return Response("not found\n", status_code=404, media_type="text/plain")
    media_type = MEDIA_TYPES[_suffix(found.name)]
    return Response(found.read_bytes(), media_type=media_type,
                    headers={"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"})


def _find(path: str) -> Traversable | None:
    """The packaged file at `path` (segments of `static/`), or None: no `..`, no hidden names, no
    kind outside MEDIA_TYPES (LICENSE and VERSION, which have no suffix, are text)."""
    parts = path.split("/")
    if any(not part or part.startswith(".") or "\\" in part for part in parts):
        return None
    if _suffix(parts[-1]) not in MEDIA_TYPES:
        return None
    node = resources.files(__package__).joinpath("static")
    for part in parts:
        node = node.joinpath(part)
    return node if node.is_file() else None


def _suffix(name: str) -> str:
    return name[name.rfind("."):] if "." in name else ""
