"""A tiny page on ComfyUI's port until ComfyUI can start: what is still missing, and where to watch it."""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..config import pod_port_url
from ..errors import human_bytes
from ..readiness import Missing


def render(missing: Missing, waiting_for: list[str], downloader_url: str) -> str:
    """The page: a row per missing model with a progress bar; it refreshes itself every 5 s."""
    rows = []
    for m in missing:
        size = m.get("size") or 0
        done = m.get("bytes_done") or 0
        pct = 100.0 * done / size if size else 0.0
        detail = html.escape(m.get("error") or "")
        rows.append(
            f"<tr><td>{html.escape(m['id'])}</td><td>{html.escape(m.get('state') or 'not started')}</td>"
            f"<td><progress max=100 value={pct:.1f}></progress> {pct:.1f}% of {human_bytes(size) if size else '?'}"
            f"</td><td class=err>{detail}</td></tr>"
        )
    waits = "".join(f"<li>{html.escape(w)}</li>" for w in waiting_for)
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content=5>
<meta name=viewport content="width=device-width,initial-scale=1"><title>ComfyUI is starting</title>
<style>body{{font:15px system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#ddd;background:#15171c}}
table{{border-collapse:collapse;width:100%}}td{{padding:.3rem .5rem;border-bottom:1px solid #333}}
a{{color:#7ab7ff}}.err{{color:#ff7a7a}}progress{{width:12rem}}</style></head><body>
<h1>ComfyUI starts when its models are verified</h1>
<p>Follow the downloads (and start, pause or retry them) in the <a href="{html.escape(downloader_url)}">downloader</a>.
This page refreshes itself.</p>
{"<ul>" + waits + "</ul>" if waits else ""}
<table><tr><th>model</th><th>state</th><th>progress</th><th></th></tr>{"".join(rows)}</table>
</body></html>"""


class Placeholder:
    """Serve `render(...)` on `port` until `stop()`; `status()` is asked on every request.

    `pod_id` is RUNPOD_POD_ID (from the settings): the link to the downloader then goes through RunPod's proxy."""

    def __init__(self, port: int, status: Callable[[], tuple[Missing, list[str]]], downloader_port: int,
                 pod_id: str | None = None) -> None:
        self.status = status
        self.downloader_port = downloader_port
        self.pod_id = pod_id
        placeholder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                missing, waiting = placeholder.status()
                if self.path.startswith("/placeholder.json"):
                    body = json.dumps({"missing": missing, "waiting_for": waiting}).encode()
                    ctype = "application/json"
                else:
                    url = pod_port_url(self.headers.get("Host", ""), placeholder.downloader_port,
                                       pod_id=placeholder.pod_id)
                    body = render(missing, waiting, url).encode()
                    ctype = "text/html; charset=utf-8"
                self.send_response(503)  # not ComfyUI yet: health checks must not take this for it
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Retry-After", "5")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="placeholder", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Free the port for ComfyUI."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
