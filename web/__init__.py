"""The web UI on port 8765: create_app() builds the Flask app around one DownloadService."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

from downloader import __version__
from downloader.config import Settings, pod_port_url
from downloader.errors import human_bytes
from downloader.service import DownloadService

from . import auth

# Navigation: (label, endpoint or None, the Settings field holding the external port or None); pages of later
# features appear once registered.
NAV = (
    ("Downloads", "downloads.page", None),
    ("Files", "files.page", None),
    ("Video calculator", "calculator.page", None),
    ("Installation status", "status.page", None),
    ("JupyterLab", None, "jupyter_port"),
    ("ComfyUI", None, "comfy_port"),
)


def service() -> DownloadService:
    """The app's DownloadService (one per app)."""
    return current_app.extensions["downloader"]  # type: ignore[no-any-return]


def _nav(settings: Settings) -> list[dict[str, Any]]:
    """The navigation links; the other services' ports come from the app's settings, parsed at start."""
    links = []
    for label, endpoint, port_field in NAV:
        if endpoint is not None:
            if endpoint in current_app.view_functions:
                links.append({"label": label, "endpoint": endpoint, "external": False})
        else:
            port: int = getattr(settings, port_field)  # type: ignore[arg-type]
            url = pod_port_url(request.host, port, request.scheme, settings.runpod_pod_id)
            links.append({"label": label, "url": url, "external": True})
    return links


def create_app(
    settings: Settings | None = None,
    svc: DownloadService | None = None,
    test_config: dict[str, Any] | None = None,
    auth_config: auth.AuthConfig | None = None,
) -> Flask:
    """Build the app. The service is not started here: `downloader serve` (or a test) starts it."""
    app = Flask(__name__)
    # Behind RunPod's HTTPS proxy: trust its scheme and host for the links we build (not X-Forwarded-For, which
    # a client could forge to slip past the login rate limit when no proxy is in front).
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=0, x_proto=1, x_host=1)  # type: ignore[method-assign]
    settings = settings or (svc.settings if svc is not None else Settings.from_env())
    svc = svc or DownloadService(settings)
    app.extensions["downloader"] = svc
    app.config.update(
        SECRET_KEY=auth.secret_key(settings.state_dir),
        PERMANENT_SESSION_LIFETIME=timedelta(days=30),
        MAX_CONTENT_LENGTH=None,
        VERSION=__version__,
    )
    if test_config:
        app.config.update(test_config)
    auth.init_app(app, auth_config or auth.resolve_auth(settings))

    from . import calculator, downloads, files, status, verify, workflows

    for blueprint in (downloads.bp, files.bp, calculator.bp, status.bp, verify.bp, workflows.bp):
        app.register_blueprint(blueprint)
    app.jinja_env.filters["bytes"] = lambda n: human_bytes(n) if n else "?"
    app.context_processor(lambda: {"nav": _nav(settings), "auth_on": app.config["AUTH"].password is not None})
    return app
