"""The gateway's OpenAPI document: `python -m mmq.clients.gateway.openapi > docs/openapi.json`
(`make openapi`). A test checks that the committed copy is the one the gateway serves."""

from __future__ import annotations

import json
from typing import Any

from mmq.tasks.settings import Settings


def document() -> dict[str, Any]:
    from .app import create_app

    # Default settings: the document describes the API, not one deployment's limits or addresses.
    return create_app(Settings(), webhooks=False).openapi()


if __name__ == "__main__":
    print(json.dumps(document(), indent=2, sort_keys=True))
