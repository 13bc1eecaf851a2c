"""The gateway's OpenAPI document: `python -m mmq.clients.gateway.openapi > docs/openapi.json`
(`make openapi`). A test checks that the committed copy is the one the gateway serves.

FastAPI writes the document from the routes; `api_document` corrects the one thing in it that says
more than the gateway does: an optional query or header parameter is written as "a string or null",
but a parameter is absent or a string (`?cursor=null` is the four letters), so null goes.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from mmq.tasks.settings import Settings


def api_document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, made once."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, openapi_version=app.openapi_version,
                               description=app.description, routes=app.routes)
        for path in document.get("paths", {}).values():
            for operation in path.values():
                for parameter in operation.get("parameters", ()):
                    parameter["schema"] = _without_null(parameter["schema"])
        app.openapi_schema = document
    return app.openapi_schema


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`{"anyOf": [S, {"type": "null"}], ...}` as S with the rest (title, description, default) kept."""
    options = [option for option in schema.get("anyOf", ()) if option != {"type": "null"}]
    if "anyOf" not in schema or len(options) != 1:
        return schema
    rest = {key: value for key, value in schema.items()
            if key != "anyOf" and not (key == "default" and value is None)}
    return {**options[0], **rest}


def document() -> dict[str, Any]:
    from .app import create_app

    # Default settings: the document describes the API, not one deployment's limits or addresses.
    return create_app(Settings(), webhooks=False).openapi()


if __name__ == "__main__":
    print(json.dumps(document(), indent=2, sort_keys=True))
