"""The pages' own requests (htmx sends them with `HX-Request: true`) and what they get back.

A page is rendered on the server once: the same templates answer the first load, the plain form posts of a
browser without JavaScript, and the fragments the page's scripts swap in (web/static/live.js). Scripts keep the
JSON API; the page's requests get fragments, and events in the `HX-Trigger` header (a flash message) that
live.js acts on.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, request


def is_htmx() -> bool:
    """Whether the page's JavaScript (htmx or live.js) made this request, rather than a script or a plain form."""
    return request.headers.get("HX-Request") == "true"


def with_flash(response: Response, message: str, category: str = "info") -> Response:
    """Have the page show `message` as a flash (live.js listens for the "flash" event)."""
    events: dict[str, Any] = json.loads(response.headers.get("HX-Trigger") or "{}")
    events["flash"] = {"message": message, "category": category}
    response.headers["HX-Trigger"] = json.dumps(events)  # ASCII only: non-ASCII text is \u-escaped
    return response
