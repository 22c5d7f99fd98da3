"""`downloader serve`: the web UI under a production WSGI server (waitress), with the manager in the background.

The service owns its pod's downloads: it records in `<state>/service-<pod>.json` (owner-only) its pid, port, pod and
a per-start local token, so that `downloader fetch` and the other commands on the same machine become its clients
instead of waiting on the lock it holds. Several pods sharing the state folder each write their own record.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from rich.console import Console
from waitress.server import create_server

from downloader.config import Settings
from downloader.errors import DownloaderError
from downloader.locks import ServiceInfo, remove_service_info, write_service_info
from downloader.service import DownloadService
from downloader.signals import stop_on_signals

log = logging.getLogger(__name__)


def _queue_presets(svc: DownloadService, presets: Sequence[str], console: Console) -> None:
    """Queue the start-up presets without holding up the UI (resolving them talks to the hub)."""
    for name in presets:
        try:
            ids = svc.start_preset(name)
            console.print(f"queued preset {name}: {', '.join(ids)}")
        except DownloaderError as e:
            console.print(f"[red]cannot queue preset {name}[/]: {e}")
            svc.store.log(None, f"cannot queue preset {name}: {e}", "error")


def local_address(host: str) -> str:
    """The address a client on this machine uses to reach a server listening on `host`."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1", "localhost": "127.0.0.1"}.get(host, host)


def run_service(settings: Settings, host: str, port: int, presets: Sequence[str], console: Console) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (128 + signal)."""
    from . import create_app
    from .auth import resolve_auth, with_local_token

    svc = DownloadService(settings)  # loads the manifests: a bad one stops us here, with its error
    for name in presets:
        if name not in svc.catalog.presets:
            known = ", ".join(sorted(svc.catalog.presets))
            raise DownloaderError(f"unknown preset {name!r} (known presets: {known})")
    auth = with_local_token(resolve_auth(settings))
    app = create_app(settings, svc, auth_config=auth)
    server = create_server(app, host=host, port=port, threads=8, ident="downloader")
    port = int(server.effective_port)  # type: ignore[union-attr]
    # Written before the manager takes the workspace lock, so a CLI never finds the lock held by a service it
    # cannot see (connections made before server.run() wait in the listen backlog); removed on a clean stop.
    info = ServiceInfo(os.getpid(), local_address(host), port, auth.local_token or "", settings.pod_id)
    write_service_info(settings.state_dir, info)
    try:
        svc.start()
        threading.Thread(target=_queue_presets, args=(svc, presets, console), name="presets", daemon=True).start()
        shown = "localhost" if host in ("0.0.0.0", "::") else host
        console.print(f"downloader UI on http://{shown}:{port}/ (models in {settings.models_dir}; pod {settings.pod_id})")
        console.print(svc.sharing_note)
        if auth.password is None:
            console.print("[yellow]warning[/]: DOWNLOADER_AUTH=none: the UI has no password; anyone who can reach it can use it")
        elif auth.source == "generated":
            # Printed once to the service's own console so the pod owner can log in; never written to a log file.
            console.print(f"password (generated, kept in {auth.file}): {auth.password}")
        else:
            console.print(f"password: the value of {auth.source}")
        with stop_on_signals(server.close) as received:
            try:
                server.run()
            except (OSError, ValueError):
                if not received:  # close() from the handler makes the loop raise on the closed socket
                    raise
    finally:
        remove_service_info(settings.state_dir, info.pod, info.pid)
        svc.stop()
    return 128 + received[0] if received else 0
