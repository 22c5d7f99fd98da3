"""A loopback stand-in for CivitAI: its REST API and download endpoint (127.0.0.1) and the presigned object
store the downloads redirect to (127.0.0.2), with the behaviours download tools trip over:

- `GET /api/v1/model-versions/<id>`: the version's JSON (model, files[] with sizeKB, hashes.SHA256 in upper case
  unless the file has none, downloadUrl, primary); 404 for an unknown version.
- `GET /api/download/models/<id>[?fileId=|type=&format=&size=&fp=]`: Python's default User-Agents get
  Cloudflare's 403; a HEAD carrying a token gets 401; a version that needs a token gets 401 without the right
  one; an early-access version 403 {"error": "Early Access", "deadline": …}; otherwise a 307 to a signed storage
  URL (X-Amz-Date / X-Amz-Expires / X-Amz-Signature).
- The store: 400 for any request carrying an `Authorization` header (as R2 does with a presigned URL), 403 for a
  bad or expired signature (the clock is the stand-in's, injectable: no sleeps), Range answered with 206.

Every request is recorded (`requests`), headers included, so tests can check where the token went.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

PYTHON_AGENTS = ("python-urllib", "python-requests", "aiohttp", "python-httpx", "python/")
TOKEN = "civitai-standin-token-5f3a9c"


@dataclass
class StandinFile:
    """One file of a model version."""

    id: int
    name: str
    data: bytes
    type: str = "Model"
    primary: bool = False
    publish_sha256: bool = True
    format: str = "SafeTensor"
    fp: str = "fp16"
    size: str = "pruned"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class StandinVersion:
    """One model version: its model's type and name, its files, and who may download it."""

    id: int
    model_id: int
    model_type: str
    files: list[StandinFile]
    model_name: str = "Stand-in model"
    name: str = "v1.0"
    needs_token: bool = False
    early_access_deadline: str | None = None
    air_type: str | None = None


@dataclass(frozen=True)
class Seen:
    """One request as a stand-in server saw it (header names lower-cased)."""

    server: str  # "api" or "storage"
    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int


class ManualClock:
    """A clock tests move by hand: signatures expire without sleeping."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, owner: CivitaiStandin, role: str) -> None:
        super().__init__((host, 0), _Handler)
        self.owner, self.role = owner, role


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _handle(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        handler = owner._api if self.server.role == "api" else owner._storage
        status, headers, body = handler(self.command, unquote(parts.path), parse_qs(parts.query), self.headers)
        with owner._lock:
            owner.requests.append(
                Seen(self.server.role, self.command, parts.path, parts.query,
                     {k.lower(): v for k, v in self.headers.items()}, status)
            )
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if self.command == "HEAD":
            return
        held = owner.gate_after if self.server.role == "storage" and status in (200, 206) else None
        try:
            if held is not None and held < len(body):
                self.wfile.write(body[:held])
                self.wfile.flush()
                owner.gate.wait(timeout=60)
                body = body[held:]
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away while held (paused): nothing more to send


Reply = tuple[int, dict[str, str], bytes]  # status, headers, body


def _json(status: int, data: Any) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


class CivitaiStandin:
    """The stand-in; a context manager. `url` is what CIVITAI_ENDPOINT would be."""

    def __init__(self, *, token: str = TOKEN, ttl: float = 3600.0, clock: Callable[[], float] | None = None) -> None:
        self.token, self.ttl = token, ttl
        self.clock: Callable[[], float] = clock or ManualClock()
        self.versions: dict[int, StandinVersion] = {}
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._key = b"standin-signing-key"
        self._api = _Api(self)
        self._servers = [_Server("127.0.0.1", self, "api"), _Server("127.0.0.2", self, "storage")]
        self._threads: list[threading.Thread] = []
        self.api_unavailable = 0  # the next this-many API requests answer 503 (CivitAI having a bad minute)
        # Storage downloads send `gate_after` bytes of each body, then wait for `gate` (a test holds a download
        # mid-file this way, without timing); None sends bodies whole.
        self.gate_after: int | None = None
        self.gate = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def storage_url(self) -> str:
        return f"http://127.0.0.2:{self._servers[1].server_address[1]}"

    def add(self, version: StandinVersion) -> StandinVersion:
        self.versions[version.id] = version
        return version

    def seen(self, server: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.server == server]

    def __enter__(self) -> Self:
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    # --- signing ---------------------------------------------------------------------------------------------

    def _signature(self, path: str, date: str, expires: str) -> str:
        return hmac.new(self._key, f"{path}\n{date}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def signed_url(self, file: StandinFile) -> str:
        path = f"/file/{file.id}/{file.name}"
        date, expires = str(int(self.clock())), str(int(self.ttl))
        query = f"X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-Signature={self._signature(path, date, expires)}"
        return f"{self.storage_url}/file/{file.id}/{quote(file.name)}?{query}"

    def _storage(self, method: str, path: str, query: dict[str, list[str]], headers: Any) -> Reply:
        if headers.get("Authorization"):
            return 400, {"Content-Type": "application/xml"}, (
                b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>"
            )
        date, expires, sig = (query.get(k, [""])[0] for k in ("X-Amz-Date", "X-Amz-Expires", "X-Amz-Signature"))
        if not sig or not hmac.compare_digest(sig, self._signature(path, date, expires)):
            return 403, {}, b"<Error><Code>SignatureDoesNotMatch</Code></Error>"
        if self.clock() > int(date) + int(expires):
            return 403, {}, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
        match = re.fullmatch(r"/file/(\d+)/(.+)", path)
        file = next((f for v in self.versions.values() for f in v.files if match and f.id == int(match[1])), None)
        if file is None:
            return 404, {}, b"<Error><Code>NoSuchKey</Code></Error>"
        data, size = file.data, len(file.data)
        common = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream",
                  "Content-Disposition": f'attachment; filename="{file.name}"'}
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", headers.get("Range") or "")
        if ranged and int(ranged[1]) < size:
            start = int(ranged[1])
            end = min(int(ranged[2]) if ranged[2] else size - 1, size - 1)
            body = data[start : end + 1]
            return 206, {**common, "Content-Range": f"bytes {start}-{end}/{size}",
                         "Content-Length": str(len(body))}, body
        return 200, {**common, "Content-Length": str(size)}, data if method == "GET" else b""


class _Api:
    """The API server's routes."""

    def __init__(self, owner: CivitaiStandin) -> None:
        self.owner = owner

    def __call__(self, method: str, path: str, query: dict[str, list[str]], headers: Any) -> Reply:
        with self.owner._lock:
            if self.owner.api_unavailable > 0:
                self.owner.api_unavailable -= 1
                return 503, {"Content-Type": "text/html"}, b"<html>503 Service Temporarily Unavailable</html>"
        agent = (headers.get("User-Agent") or "").lower()
        if not agent or agent.startswith(PYTHON_AGENTS):
            return 403, {"Content-Type": "text/html"}, b"<html><title>Just a moment...</title></html>"
        if match := re.fullmatch(r"/api/v1/model-versions/(\d+)", path):
            version = self.owner.versions.get(int(match[1]))
            if version is None:
                return _json(404, {"error": f"No model version with id {match[1]}"})
            return _json(200, self.describe(version))
        if match := re.fullmatch(r"/api/download/models/(\d+)", path):
            return self.download(method, int(match[1]), query, headers)
        return _json(404, {"error": "Not found"})

    def describe(self, version: StandinVersion) -> dict[str, Any]:
        base = self.owner.url
        air_type = version.air_type or version.model_type.lower()
        return {
            "id": version.id,
            "modelId": version.model_id,
            "name": version.name,
            "baseModel": "Wan Video 14B t2v",
            "air": f"urn:air:wan:{air_type}:civitai:{version.model_id}@{version.id}",
            "model": {"name": version.model_name, "type": version.model_type, "nsfw": False, "poi": False},
            "earlyAccessEndsAt": version.early_access_deadline,
            "downloadUrl": f"{base}/api/download/models/{version.id}",
            "files": [
                {
                    "id": f.id,
                    "name": f.name,
                    "type": f.type,
                    "sizeKB": len(f.data) / 1024,
                    "primary": f.primary,
                    "metadata": {"format": f.format, "size": f.size, "fp": f.fp},
                    "hashes": ({"AutoV2": f.sha256[:10].upper(), "SHA256": f.sha256.upper()} if f.publish_sha256
                               else {}),
                    "downloadUrl": f"{base}/api/download/models/{version.id}?type={quote(f.type)}&format={f.format}",
                }
                for f in version.files
            ],
        }

    def download(self, method: str, version_id: int, query: dict[str, list[str]], headers: Any) -> Reply:
        auth = headers.get("Authorization") or ""
        if method == "HEAD" and auth:
            return _json(401, {"error": "Unauthorized"})  # what the real endpoint does with a token and HEAD
        version = self.owner.versions.get(version_id)
        if version is None:
            return _json(404, {"error": f"No model version with id {version_id}"})
        if auth and auth != f"Bearer {self.owner.token}":
            return _json(401, {"error": "Unauthorized", "message": "Invalid API key"})
        if version.early_access_deadline:
            return _json(403, {"error": "Early Access", "deadline": version.early_access_deadline})
        if version.needs_token and not auth:
            return _json(401, {"error": "Unauthorized", "message": "The creator requires you to be logged in"})
        file = self.pick(version, query)
        if file is None:
            return _json(404, {"error": "No file matches"})
        return 307, {"Location": self.owner.signed_url(file)}, b""

    @staticmethod
    def pick(version: StandinVersion, query: dict[str, list[str]]) -> StandinFile | None:
        if "fileId" in query:
            return next((f for f in version.files if str(f.id) == query["fileId"][0]), None)
        wanted = {k: query[k][0].lower() for k in ("type", "format", "size", "fp") if k in query}
        matching = [f for f in version.files if all(str(getattr(f, k)).lower() == v for k, v in wanted.items())]
        matching.sort(key=lambda f: not f.primary)
        return matching[0] if matching else None


def sample_bytes(n: int, seed: str) -> bytes:
    """`n` deterministic bytes (a model file's stand-in)."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


@dataclass
class Catalogue:
    """The versions most tests use, by role."""

    lora: StandinVersion
    checkpoint: StandinVersion
    gated: StandinVersion
    unhashed: StandinVersion
    early: StandinVersion
    extra: dict[str, StandinVersion] = field(default_factory=dict)


def populate(standin: CivitaiStandin) -> Catalogue:
    """A LoRA (public), a checkpoint with a pruned model, a full model and its VAE, a version that needs a token,
    one without a SHA256 and one in early access."""
    lora = standin.add(StandinVersion(
        2_000_001, 100_001, "LORA", [StandinFile(3_000_001, "wan_style_lora.safetensors",
                                                 sample_bytes(3 * 1024 * 1024 + 17, "lora"), primary=True)],
        model_name="Wan style"))
    checkpoint = standin.add(StandinVersion(2_000_002, 100_002, "Checkpoint", [
        StandinFile(3_000_002, "dream_pruned.safetensors", sample_bytes(200_000, "pruned"), primary=True),
        StandinFile(3_000_003, "dream_full.safetensors", sample_bytes(300_000, "full"), size="full", fp="fp32"),
        StandinFile(3_000_004, "dream_vae.safetensors", sample_bytes(50_000, "vae"), type="VAE"),
    ]))
    gated = standin.add(StandinVersion(
        2_000_003, 100_003, "LORA", [StandinFile(3_000_005, "gated_lora.safetensors", sample_bytes(80_000, "gated"),
                                                 primary=True)], needs_token=True))
    unhashed = standin.add(StandinVersion(
        2_000_004, 100_004, "TextualInversion",
        [StandinFile(3_000_006, "old_embedding.pt", sample_bytes(9_000, "emb"), primary=True, publish_sha256=False,
                     format="PickleTensor")]))
    early = standin.add(StandinVersion(
        2_000_005, 100_005, "LORA", [StandinFile(3_000_007, "early.safetensors", b"x" * 100, primary=True)],
        early_access_deadline="2031-01-01T00:00:00.000Z"))
    return Catalogue(lora, checkpoint, gated, unhashed, early)
