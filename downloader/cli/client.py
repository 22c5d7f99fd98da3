"""The CLI as a client of a running `downloader serve`: find this pod's through its record in the state folder
(`service-<pod>.json`), call its JSON API.

The service owns this pod's downloads, so when one runs, every command asks it instead of touching the state
database or waiting on a lock. Several pods' services may share the state folder: ours is the one whose port
answers on loopback and says it is the record's pod (and, when RUNPOD_POD_ID names this pod, that pod).
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..locks import ServiceInfo, read_service_infos

PROBE_TIMEOUT = 5.0  # a live service answers /healthz at once; a stale record's port refuses or stays silent
CALL_TIMEOUT = 600.0  # starting a preset resolves every file at the hub first


class ServiceError(Exception):
    """The service answered with an error (`status` is its HTTP status) or could not be reached (`status` 0)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ServiceUnreadable(Exception):
    """A service runs for this workspace but this user cannot read its record (another user's service)."""


@dataclass
class ServiceClient:
    """JSON calls to one service, authenticated with its local token."""

    info: ServiceInfo

    @property
    def where(self) -> str:
        host = f"[{self.info.host}]" if ":" in self.info.host else self.info.host
        return f"http://{host}:{self.info.port}"

    def request(self, method: str, path: str, body: Any = None, timeout: float = CALL_TIMEOUT) -> tuple[int, Any]:
        """One request; returns (status, decoded JSON or None). Raises ServiceError (status 0) for no answer."""
        headers = {"Authorization": f"Bearer {self.info.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self.info.host, self.info.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            res = conn.getresponse()
            raw = res.read()
        except (OSError, http.client.HTTPException) as e:
            raise ServiceError(f"the service at {self.where} (pid {self.info.pid}) did not answer: {e}") from None
        finally:
            conn.close()
        try:
            return res.status, json.loads(raw) if raw else None
        except ValueError:
            return res.status, None

    def call(self, method: str, path: str, body: Any = None, timeout: float = CALL_TIMEOUT) -> tuple[int, Any]:
        """`request`, with an error answer (4xx/5xx, `{"error": ...}`) raised as ServiceError."""
        status, payload = self.request(method, path, body, timeout)
        if status >= 400:
            message = payload.get("error") if isinstance(payload, dict) else None
            if status == 401:
                message = f"the service did not accept the local token of its record: {message}"
            raise ServiceError(message or f"the service answered HTTP {status} to {method} {path}", status)
        return status, payload

    def get(self, path: str) -> Any:
        return self.call("GET", path, timeout=60)[1]

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body if body is not None else {})[1]

    def answers(self) -> bool:
        """Whether the recorded pod's service answers on the recorded port (503 included: a service whose engine
        is starting or waiting still owns its pod's downloads, and says why). The pod is what /healthz says, or
        (a service that does not say it there) the summary of /api/downloads, asked with the record's token."""
        try:
            status, payload = self.request("GET", "/healthz", timeout=PROBE_TIMEOUT)
            if not (status in (200, 503) and isinstance(payload, dict) and "downloads" in payload):
                return False
            pod = payload.get("pod")
            if pod is None:
                status, payload = self.request("GET", "/api/downloads", timeout=PROBE_TIMEOUT)
                summary = payload.get("summary") if status == 200 and isinstance(payload, dict) else None
                pod = summary.get("pod") if isinstance(summary, dict) else None
        except ServiceError:
            return False
        return bool(pod) and pod == self.info.pod


def segment(value: str) -> str:
    """A path segment for the API (ids and preset names are plain, but never trust that)."""
    return quote(value, safe="")


LOOPBACK = ("127.", "::1", "localhost")


def find_service(state_dir: Path, pod: str | None = None) -> ServiceClient | None:
    """This machine's service for the workspace (of `pod`, RUNPOD_POD_ID, when known), or None: no record, or only
    stale ones (dead pid, silent port) and other pods'. Without a known pod, only a record on loopback counts:
    another machine's service may answer on a network address."""
    try:
        infos = read_service_infos(state_dir, pod)
    except PermissionError as e:
        raise ServiceUnreadable(
            f"a downloader service runs for this workspace, but this user cannot read {e.filename}: "
            "run the command as the user that runs the service"
        ) from None
    for info in infos:
        if pod is None and not info.host.startswith(LOOPBACK):
            continue
        client = ServiceClient(info)
        if client.answers():
            return client
    return None
