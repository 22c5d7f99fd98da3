"""The file manager's reads: a file as a download (with HTTP Range), inline for a preview, or the end of it as text."""

from __future__ import annotations

import mimetypes
import os
from typing import Any

from flask import jsonify, request, send_file

from downloader.config import SECRET_STATE_FILES

from .files_rules import ApiError, confine, os_errors, state_dir, under
from .safepath import Resolved

TEXT_TAIL = 64 << 10  # default bytes of a text preview (the end of the file: logs)
TEXT_TAIL_MAX = 1 << 20
# Served inline (previews) only as these types; anything else that is asked for inline comes as a download, so a
# file on the volume (an .html, an .svg) can never run script in the UI's origin.
INLINE_TYPES = {
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp",
    "video/mp4", "video/webm", "video/quicktime", "video/ogg", "video/x-m4v",
    "audio/mpeg", "audio/wav", "audio/x-wav", "audio/ogg", "audio/flac", "audio/mp4", "audio/x-m4a", "audio/opus",
}
RAW_CSP = "sandbox; default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'"


def _a_file(rel: object) -> Resolved:
    res = confine(rel)
    if not res.real.exists():
        raise ApiError(404, f"{res.rel or '(the workspace)'!r} does not exist")
    if res.real.is_dir():
        raise ApiError(400, f"{res.rel or '(the workspace)'!r} is a folder: pick a file")
    if not res.real.is_file():
        raise ApiError(400, f"{res.rel!r} is not a regular file")
    if res.real.name in SECRET_STATE_FILES and under(str(res.real), state_dir()):
        raise ApiError(403, f"{res.rel!r} holds a secret (a password, token or key): it is not served")
    return res


@os_errors
def api_download() -> Any:
    """The file as an attachment; HTTP Range (resume) and conditional requests are answered."""
    res = _a_file(request.args.get("path"))
    response = send_file(res.real, as_attachment=True, download_name=res.name, conditional=True, max_age=0)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@os_errors
def api_raw() -> Any:
    """The file inline, for previews (images, video with seeking, audio); other types come as a download."""
    res = _a_file(request.args.get("path"))
    mime = mimetypes.guess_type(res.name)[0] or "application/octet-stream"
    inline = mime in INLINE_TYPES
    response = send_file(
        res.real,
        mimetype=mime if inline else "application/octet-stream",
        as_attachment=not inline,
        download_name=res.name,
        conditional=True,
        max_age=0,
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = RAW_CSP
    return response


@os_errors
def api_text() -> Any:
    """The end of a file as text (logs): the last `bytes` bytes, from the first full line, decoded leniently."""
    res = _a_file(request.args.get("path"))
    raw = request.args.get("bytes", str(TEXT_TAIL))
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(400, "bytes must be a positive whole number")
    want = min(int(raw), TEXT_TAIL_MAX)
    with open(res.real, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        start = max(0, size - want)
        fh.seek(start)
        data = fh.read(want)
    if start > 0:
        cut = data.find(b"\n")
        if 0 <= cut < len(data) - 1:
            data, start = data[cut + 1 :], start + cut + 1
    return jsonify(
        path=res.rel,
        size=size,
        start=start,
        truncated=start > 0,
        binary=b"\x00" in data,
        text=data.decode("utf-8", "replace"),
    )

