"""Login for every page and API: the pod's port is public through its proxy, so a password is on by default.

People log in once (a session cookie); scripts send HTTP basic (any user name) or `Authorization: Bearer`.
Local clients (the CLI on the same machine) send the service's per-start local token the same way: `downloader
serve` keeps it in an owner-only file in the state folder, never on a command line or in a log.
State-changing requests made with the cookie need the CSRF token; header-authenticated ones cannot be forged
by another site, so they do not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect

from downloader.config import SESSION_KEY_FILE, UI_PASSWORD_FILE, Settings
from downloader.secret_files import read_or_create

bp = Blueprint("auth", __name__)
csrf = CSRFProtect()
limiter = Limiter(get_remote_address, storage_uri="memory://", default_limits=[])
OPEN_ENDPOINTS = {"auth.login", "auth.logout", "status.healthz", "static"}


@dataclass(frozen=True)
class AuthConfig:
    """The password in force (None: auth off) and where it came from, for the start-up message."""

    password: str | None
    source: str  # "DOWNLOADER_PASSWORD", "JUPYTER_PASSWORD", "generated", "none"
    file: Path | None = None
    local_token: str | None = None  # accepted like the password in a header (see `with_local_token`)

    def accepts(self, supplied: str) -> bool:
        """Whether a header credential is the password or the local token (constant-time comparisons)."""
        return any(
            secret is not None and hmac.compare_digest(supplied.encode(), secret.encode())
            for secret in (self.password, self.local_token)
        )


def with_local_token(config: AuthConfig) -> AuthConfig:
    """The same config plus a fresh random token for local clients (one per start of the service)."""
    return replace(config, local_token=secrets.token_urlsafe(32))


def _read_or_create(path: Path, make: Callable[[], str]) -> str:
    """The secret in the state folder, or a new one kept there. Pods starting together on one volume may both
    create it: one wins, the other reads the winner's file whole (downloader/secret_files.py)."""
    return read_or_create(path, make)[0]


def resolve_auth(settings: Settings) -> AuthConfig:
    """DOWNLOADER_PASSWORD, else JUPYTER_PASSWORD, else a generated one kept in the state folder."""
    if not settings.ui_auth:
        return AuthConfig(None, "none")
    for name, password in (("DOWNLOADER_PASSWORD", settings.ui_password), ("JUPYTER_PASSWORD", settings.jupyter_password)):
        if password:
            return AuthConfig(password, name)
    path = settings.state_dir / UI_PASSWORD_FILE
    return AuthConfig(_read_or_create(path, lambda: secrets.token_urlsafe(12)), "generated", path)


def secret_key(state_dir: Path) -> str:
    """Flask's session key, stable across restarts so people stay logged in."""
    return _read_or_create(state_dir / SESSION_KEY_FILE, lambda: secrets.token_hex(32))


def _marker(password: str) -> str:
    """What the session cookie holds: changes when the password does, so old sessions end."""
    return hmac.new(current_app.secret_key.encode(), password.encode(), hashlib.sha256).hexdigest()  # type: ignore[union-attr]


def _header_password() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip()).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return None
    return None


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def guard() -> object | None:
    """before_request: let through open endpoints and authenticated requests; CSRF-check cookie users."""
    config: AuthConfig = current_app.config["AUTH"]
    g.auth_via = None
    if config.password is None or request.endpoint in OPEN_ENDPOINTS:
        if config.password is None and request.method not in ("GET", "HEAD", "OPTIONS") and request.form:
            csrf.protect()
        return None
    supplied = _header_password()
    if supplied is not None and config.accepts(supplied):
        g.auth_via = "header"
        return None
    if session.get("auth") and hmac.compare_digest(session["auth"], _marker(config.password)):
        g.auth_via = "session"
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            csrf.protect()
        return None
    if _wants_json():
        response = jsonify(error="authentication required: log in, or send the password as HTTP basic or Bearer")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Basic realm="downloader"'
        return response
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _safe_next(target: str | None) -> str:
    """Only local paths: a login link must not bounce people to another site."""
    if not target:
        return url_for("downloads.page")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("downloads.page")
    return target


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit("10 per minute", methods=["POST"])
def login() -> object:
    """The login form; a wrong password says so and keeps the page."""
    config: AuthConfig = current_app.config["AUTH"]
    if config.password is None:
        return redirect(_safe_next(request.args.get("next")))
    if request.method == "POST":
        csrf.protect()
        supplied = request.form.get("password", "")
        if hmac.compare_digest(supplied.encode(), config.password.encode()):
            session.clear()
            session["auth"] = _marker(config.password)
            session.permanent = True
            return redirect(_safe_next(request.form.get("next")))
        flash("Wrong password.", "error")
        return render_template("login.html", next=request.form.get("next", ""), hint=_hint(config)), 401
    return render_template("login.html", next=request.args.get("next", ""), hint=_hint(config))


def _hint(config: AuthConfig) -> str:
    if config.source == "generated":
        return f"The password was generated at first start: it is printed in the service's log and kept in {config.file}."
    return f"Use the password set in {config.source}."


@bp.route("/logout", methods=["POST"])
def logout() -> object:
    csrf.protect()
    session.clear()
    return redirect(url_for("auth.login"))


def _csrf_failed(error: CSRFError) -> object:
    """A refused CSRF check in words; JSON for the API, so scripts and the page's JS can show it."""
    message = f"{error.description} Reload the page and try again."
    if _wants_json() or request.is_json:
        return jsonify(error=message), 400
    flash(message, "error")
    return redirect(request.referrer if request.referrer and _safe_next(urlsplit(request.referrer).path) else
                    url_for("downloads.page"))


def init_app(app: Flask, config: AuthConfig) -> None:
    """Wire auth, CSRF and the login rate limit into the app."""
    app.config["AUTH"] = config
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # checked in guard(), for cookie users only
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # a tab left open all day keeps working
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    csrf.init_app(app)
    limiter.init_app(app)
    app.before_request(guard)
    app.register_error_handler(CSRFError, _csrf_failed)
    app.register_blueprint(bp)
