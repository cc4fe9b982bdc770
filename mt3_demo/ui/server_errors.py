"""What the server answers when Gradio refuses a request itself: the same status and text, with
every absolute path cut to its last part.

Gradio words some refusals with the paths it resolved — a file name an API client sent becomes
"Cannot move /the/app's/working/folder/name.wav to the gradio cache dir…" in a 400 — which tells
anyone the server's folders. Our own messages name files only; this handler makes Gradio's do too.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

# An absolute POSIX path: "/" then at least one more part, up to a space, quote, bracket or comma.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"(),/]+/)*[^\s'\"(),/]*")


def scrub_paths(text: str) -> str:
    """``text`` with each absolute path replaced by its last part ("/srv/app/x.wav" → "x.wav")."""
    return _ABSOLUTE_PATH.sub(lambda m: PurePosixPath(m.group(0)).name or "/", text)


async def http_exception_handler(request: Any, exc: Any):
    """FastAPI's own answer to an ``HTTPException``, its detail scrubbed of server paths."""
    from fastapi.exception_handlers import http_exception_handler as default

    if isinstance(exc.detail, str):
        exc.detail = scrub_paths(exc.detail)
    return await default(request, exc)


def app_kwargs() -> dict[str, Any]:
    """For ``launch(app_kwargs=...)``: the handler above for every HTTP error of the app."""
    from starlette.exceptions import HTTPException

    return {"exception_handlers": {HTTPException: http_exception_handler}}
