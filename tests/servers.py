"""Loopback HTTP servers standing in for a CDN and for the Hugging Face Hub.

Standard library only, so tests and benchmarks can use them without extra
dependencies. Every server binds ``(host, 0)`` (a random free port), serves
HTTP/1.1 with keep-alive from daemon threads, and is a context manager::

    with FileServer(rate_limit=40e6) as cdn:
        cdn.add_file("/files/a.bin", path)
        url = cdn.url + "/files/a.bin"

    with FakeHub() as hub:              # owns a signing CDN on 127.0.0.2
        hub.add_file("org/model", "model.safetensors", path)
        hf_hub_download("org/model", "model.safetensors", endpoint=hub.url, ...)

Pointing ``huggingface_hub`` (2.4) at a FakeHub
------------------------------------------------
``huggingface_hub.constants.ENDPOINT`` (and the ``resolve`` URL template built
from it) is read from ``HF_ENDPOINT`` once, when ``huggingface_hub`` is first
imported, and the module-level ``huggingface_hub.hf_api.api`` object keeps the
endpoint it saw then. The port is only known once the hub has started, so:

* in-process, pass ``endpoint=hub.url`` explicitly: ``hf_hub_url(...,
  endpoint=hub.url)``, ``hf_hub_download(..., endpoint=hub.url)``,
  ``snapshot_download(..., endpoint=hub.url)``, ``HfApi(endpoint=hub.url)``;
  ``get_hf_file_metadata(url)`` just uses the URL it is given;
* or wrap the calls in ``with hub.use_as_endpoint():``, which sets
  ``HF_ENDPOINT`` and, if ``huggingface_hub`` is already imported, patches
  ``constants.ENDPOINT``, ``constants.HUGGINGFACE_CO_URL_TEMPLATE`` and
  ``hf_api.api.endpoint`` for the duration of the block;
* for a subprocess (e.g. the CLI under test), set ``HF_ENDPOINT=<hub.url>`` in
  its environment.

Pass ``token=False`` to get a request with no ``Authorization`` header at all
(``token=None`` would send a token found in ``HF_TOKEN`` or the token file).

What the library does against the hub (read from 2.4.0's sources):
``HEAD /{repo_id}/resolve/{revision}/{path}`` without following redirects; a
302 whose ``Location`` is on another origin is taken as the CDN URL, with the
metadata read from the 302 itself (``X-Repo-Commit``, ``X-Linked-Etag``,
``X-Linked-Size``). The ``Authorization`` header is then dropped and the file is
fetched with a plain ``GET`` of the ``Location`` (signed URL). No ``X-Xet-*``
header or ``xet-auth`` link is ever sent, so even with ``hf_xet`` installed the
plain HTTP path is taken. ``snapshot_download`` also calls
``GET /api/models/{repo_id}/revision/{revision}`` and
``GET /api/models/{repo_id}/tree/{commit}?recursive=True``; both are served.
"""

from __future__ import annotations

import bisect
import contextlib
import email.utils
import errno
import hashlib
import hmac
import json
import logging
import os
import secrets
import select
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["FakeHub", "FileInfo", "FileServer", "Hold", "RequestRecord"]

_log = logging.getLogger(__name__)

# Largest slice given to one sendfile()/send() call when not rate limited. The
# kernel only takes what fits in the socket buffer anyway; a big slice just
# saves Python-level iterations.
_FAST_CHUNK = 8 * 1024 * 1024
# Largest slice when paced, so a rate-limited connection never bursts far
# ahead of its budget.
_PACED_CHUNK = 256 * 1024
# How long a blocked write or a stall waits between checks of the stop event.
_POLL_SLICE = 0.1
# Idle timeout of a keep-alive connection and of a write the client never drains.
_SOCKET_TIMEOUT = 60.0
# Errors that just mean "the peer went away" and are not worth a traceback.
_DISCONNECT_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class _Aborted(Exception):
    """The response was cut short on purpose (fault injection or server stop)."""


@dataclass(frozen=True)
class RequestRecord:
    """One handled request, as seen by the server.

    ``headers`` keys are lower-cased. ``bytes_sent`` counts body bytes handed
    to the kernel for this response (including partial sends). ``fault`` names
    the injected fault that shaped the response (``"fail"``, ``"drop"``,
    ``"stall"``) or is ``None``.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    range: str | None
    status: int
    bytes_sent: int
    client_port: int
    fault: str | None = None


@dataclass
class _Fault:
    """A pending fault: applies to the next ``remaining`` matching requests."""

    kind: str
    remaining: int
    path: str | None
    status: int = 503
    after_bytes: int = 0
    seconds: float = 0.0


@dataclass
class _Content:
    """Something servable: a file on disk (streamed) or small in-memory bytes."""

    source: Path | None
    data: bytes | None
    etag: str
    last_modified: float
    filename: str | None = None

    def open(self) -> tuple[BinaryIO | None, int]:
        """Open the content; returns (file or None for bytes, current size)."""
        if self.data is not None:
            return None, len(self.data)
        assert self.source is not None
        f = open(self.source, "rb")  # noqa: SIM115 - closed by the caller
        # Size at request time, so a test that truncates the file on disk is
        # served consistently with what is actually there.
        return f, os.fstat(f.fileno()).st_size


def _make_content(source: Path | bytes, filename: str | None, version: int) -> _Content:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        tag = hashlib.sha1(data).hexdigest()[:16]
        return _Content(None, data, f'"{tag}-{version:x}"', time.time(), filename)
    path = Path(source)
    st = path.stat()  # fail early on a missing file, not at the first request
    # Validators from size/mtime (not a hash) so registering a 1 GiB file is instant.
    return _Content(path, None, f'"{st.st_size:x}-{st.st_mtime_ns:x}-{version:x}"', st.st_mtime, filename)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """Parse a single byte range.

    Returns (start, end_inclusive), None to ignore the header (absent,
    malformed or multi-range: RFC 9110 lets a server answer 200 then), or
    ``"unsatisfiable"``.
    """
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix < 0:
                return None
            if suffix == 0 or size == 0:
                return "unsatisfiable"
            return max(0, size - suffix), size - 1
        start = int(first)
        end = int(last) if last != "" else None
    except ValueError:
        return None
    if start < 0 or (end is not None and end < start):
        return None
    if start >= size:
        return "unsatisfiable"
    return start, size - 1 if end is None else min(end, size - 1)


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its owner and keeps quiet about disconnects."""

    daemon_threads = True
    # aria2 opens 16 connections at once; the default backlog of 5 would make
    # some of them wait for a SYN retransmit (1 s).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: _ServerBase) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup
        # that can hang for seconds on a machine without a resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, _Aborted)):
            return  # a peer closing early is routine for a download server
        _log.exception("unhandled error serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    """Per-connection handler: all logic lives in the owning server object."""

    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "LoopbackTestServer/1.0"
    sys_version = ""
    timeout = _SOCKET_TIMEOUT
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.owner._register(self)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._unregister(self)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        _log.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        self.server.owner._dispatch(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch


class _Exchange:
    """One request/response: parsed request plus what was sent back."""

    def __init__(self, handler: _Handler, owner: _ServerBase) -> None:
        self.handler = handler
        self.owner = owner
        self.method = handler.command
        split = urlsplit(handler.path)
        self.raw_path = split.path
        self.path = unquote(split.path)
        self.query = split.query
        self.params = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self.headers = {k.lower(): v for k, v in handler.headers.items()}
        self.status = 0
        self.sent = 0
        self.fault: str | None = None
        self.is_finishing = False

    def finishing(self) -> None:
        """Mark that the next write/close completes what the client will see.

        Stats readers wait for finishing exchanges, so a client that has just
        read a whole response always finds it in ``requests``/``bytes_sent``.
        """
        if not self.is_finishing:
            self.is_finishing = True
            self.owner._begin_finishing()

    # -- responses ---------------------------------------------------------

    def start(self, status: int, headers: dict[str, str]) -> None:
        """Send status line and headers (flushed)."""
        self.status = status
        h = self.handler
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name, value)
        h.end_headers()

    def send_simple(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        """Send a small complete response (body omitted for HEAD)."""
        all_headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        all_headers.update(headers or {})
        self.finishing()
        self.start(status, all_headers)
        if self.method != "HEAD" and body:
            self.handler.wfile.write(body)
            self.owner._account(self.path, len(body))
            self.sent += len(body)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send_simple(status, json.dumps(obj).encode(), headers, "application/json; charset=utf-8")

    def send_content(
        self,
        content: _Content,
        extra_headers: dict[str, str] | None = None,
        rate_limit: float | None = None,
        faults: bool = False,
        ranges: bool = True,
    ) -> None:
        """Serve content with Range support (``ranges=False``: the header is ignored and the whole body is sent
        with 200, as some servers do), pacing and (optionally) drop/stall faults."""
        f, size = content.open()
        try:
            rng = _parse_range(self.headers.get("range"), size) if ranges else None
            headers = {
                "Accept-Ranges": "bytes" if ranges else "none",
                "ETag": content.etag,
                "Last-Modified": email.utils.formatdate(content.last_modified, usegmt=True),
            }
            if content.filename is not None:
                headers["Content-Disposition"] = (
                    f"attachment; filename*=UTF-8''{quote(content.filename)}; "
                    f'filename="{content.filename.encode("ascii", "replace").decode()}"'
                )
            headers.update(extra_headers or {})
            if rng == "unsatisfiable":
                headers["Content-Range"] = f"bytes */{size}"
                self.send_simple(416, b"", headers)
                return
            if rng is None:
                status, start, count = 200, 0, size
            else:
                assert isinstance(rng, tuple)
                status, start, count = 206, rng[0], rng[1] - rng[0] + 1
                headers["Content-Range"] = f"bytes {rng[0]}-{rng[1]}/{size}"
            headers["Content-Type"] = "application/octet-stream"
            headers["Content-Length"] = str(count)

            fault = None
            if faults and self.method == "GET" and count > 0:
                fault = self.owner._take_fault(("drop", "stall"), self.path)
            if self.method == "HEAD" or count == 0:
                self.finishing()
            self.start(status, headers)
            if self.method == "HEAD":
                return
            limit = count
            if fault is not None:
                self.fault = fault.kind
                limit = min(count, fault.after_bytes)
            # A faulted body is not complete when its last byte is written:
            # the close that follows is what the client observes.
            self._send_body(f, content.data, start, limit, rate_limit, final=fault is None)
            if fault is not None:
                if fault.kind == "stall":
                    self._stall(fault.seconds)
                raise _Aborted(fault.kind)
        finally:
            if f is not None:
                f.close()

    # -- body writing ------------------------------------------------------

    def _send_body(
        self,
        f: BinaryIO | None,
        data: bytes | None,
        offset: int,
        count: int,
        rate_limit: float | None,
        *,
        final: bool,
    ) -> None:
        """Write ``count`` body bytes, pacing to ``rate_limit`` bytes/s if set."""
        stop = self.owner._stop_event
        chunk = _FAST_CHUNK
        if rate_limit is not None:
            # Small enough slices that pacing is smooth even at low rates.
            chunk = max(1024, min(_PACED_CHUNK, int(rate_limit / 20)))
        begin = time.monotonic()
        sent = 0
        view = memoryview(data) if data is not None else None
        sock = self.handler.connection
        while sent < count:
            if stop.is_set():
                raise _Aborted("server stopping")
            want = min(count - sent, chunk)
            if final and want == count - sent:
                self.finishing()
            if view is not None:
                n = sock.send(view[offset + sent : offset + sent + want])
            else:
                assert f is not None
                n = self._sendfile_once(sock, f, offset + sent, want)
            sent += n
            self.sent += n
            self.owner._account(self.path, n)
            if rate_limit is not None:
                # Sleep until the connection is back within its budget; waiting
                # on the stop event keeps stop() prompt.
                delay = begin + sent / rate_limit - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    raise _Aborted("server stopping")

    def _sendfile_once(self, sock: socket.socket, f: BinaryIO, offset: int, count: int) -> int:
        """One os.sendfile() on the non-blocking socket, waiting (stop-aware) for room."""
        stop = self.owner._stop_event
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLOUT)
        deadline = time.monotonic() + _SOCKET_TIMEOUT
        while True:
            try:
                n = os.sendfile(sock.fileno(), f.fileno(), offset, count)
            except BlockingIOError:
                # Socket buffer full (the socket has a timeout, hence O_NONBLOCK).
                if stop.is_set():
                    raise _Aborted("server stopping") from None
                if time.monotonic() > deadline:
                    raise TimeoutError("client stopped reading") from None
                poller.poll(_POLL_SLICE * 1000)
                continue
            if n == 0:
                # The file shrank under us: nothing sensible left to send.
                raise _Aborted("source file truncated")
            return n

    def _stall(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (or until the client hangs up or we stop)."""
        stop = self.owner._stop_event
        poller = select.poll()
        poller.register(self.handler.connection.fileno(), select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if stop.is_set() or poller.poll(min(left, _POLL_SLICE) * 1000):
                return

    def record(self) -> RequestRecord:
        return RequestRecord(
            method=self.method,
            path=self.path,
            query=self.query,
            headers=self.headers,
            range=self.headers.get("range"),
            status=self.status,
            bytes_sent=self.sent,
            client_port=int(self.handler.client_address[1]),
            fault=self.fault,
        )


class _ServerBase:
    """Lifecycle, connection tracking, request log, byte accounting and faults."""

    def __init__(self, host: str = "127.0.0.1", rate_limit: float | None = None) -> None:
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError("rate_limit must be positive")
        self.host = host
        self.rate_limit = rate_limit
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._handlers: set[_Handler] = set()
        self._idle = threading.Condition(self._lock)
        # (arrival sequence number, record), kept sorted: a quick response can
        # complete before a slower one that arrived first.
        self._records: list[tuple[int, RequestRecord]] = []
        self._seq = 0
        self._inflight = 0  # exchanges between request parse and record
        self._finishing = 0  # of those, how many are about to complete
        self._bytes: dict[str, int] = {}
        self._faults: list[_Fault] = []
        # Rate limiting (429 + Retry-After): path filter (None: every path) -> [seconds, end of window or None]
        self._limits: dict[str | None, list[float | None]] = {}

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Bind ``(host, 0)`` and serve from a daemon thread."""
        if self._httpd is not None:
            return
        self._stop_event.clear()
        self._httpd = _HTTPServer((self.host, 0), self)
        # A short poll interval so shutdown() returns quickly.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop promptly: aborts in-flight responses and closes open connections."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stop_event.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            handlers = list(self._handlers)
        for h in handlers:
            # Wakes a handler blocked in recv() on an idle keep-alive connection
            # or in poll() on a full send buffer.
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
        with self._idle:
            self._idle.wait_for(lambda: not self._handlers, timeout=5.0)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL without trailing slash, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    # -- stats ---------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot of the requests handled so far, in arrival order.

        Responses still in progress (a long or stalled body) are not listed.
        """
        with self._idle:
            self._settle()
            return [rec for _, rec in self._records]

    def bytes_sent(self, path: str | None = None) -> int:
        """Body bytes written to sockets, in total or for one URL path.

        Bytes handed to the kernel, so it can exceed what a client that hung
        up early (e.g. aria2 ending an open-ended range) actually read.
        """
        with self._idle:
            self._settle()
            if path is None:
                return sum(self._bytes.values())
            return self._bytes.get(path, 0)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being handled; False on timeout.

        Use after a client that drops connections mid-body (aria2 does, at the
        end of segments) so every server thread has recorded its exchange.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout=timeout)

    def reset_stats(self) -> None:
        """Forget the request log and byte counters."""
        with self._lock:
            self._records.clear()
            self._bytes.clear()

    def clear_faults(self) -> None:
        """Drop every pending injected fault."""
        with self._lock:
            self._faults.clear()

    # -- internals -----------------------------------------------------------

    def _settle(self) -> None:
        """With ``_idle`` held: let responses whose last bytes are out get recorded."""
        self._idle.wait_for(lambda: self._finishing == 0, timeout=2.0)

    def _begin_finishing(self) -> None:
        with self._lock:
            self._finishing += 1

    def _register(self, handler: _Handler) -> None:
        with self._lock:
            self._handlers.add(handler)

    def _unregister(self, handler: _Handler) -> None:
        with self._idle:
            self._handlers.discard(handler)
            self._idle.notify_all()

    def _account(self, path: str, n: int) -> None:
        with self._lock:
            self._bytes[path] = self._bytes.get(path, 0) + n

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, kinds: tuple[str, ...], path: str) -> _Fault | None:
        """Consume one use of the oldest pending fault of ``kinds`` matching ``path``."""
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and fault.remaining > 0 and fault.path in (None, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _rate_limit(self, path: str | None, retry_after: float) -> None:
        with self._lock:
            self._limits[path] = [retry_after, None]

    def _limited(self, ex: _Exchange, path: str) -> bool:
        """Answer 429 with ``Retry-After`` when ``path`` is rate limited: the first matching request opens a window
        of the announced seconds, and every request inside it is refused too, with the seconds left."""
        now = time.monotonic()
        with self._lock:
            key = path if path in self._limits else (None if None in self._limits else "")
            if key == "":
                return False
            seconds, until = self._limits[key]
            assert seconds is not None
            if until is None:
                until = now + seconds
                self._limits[key][1] = until
            elif now >= until:
                del self._limits[key]
                return False
        left = max(1, int(until - now + 0.999))
        ex.fault = "ratelimit"
        ex.send_simple(429, b"Too Many Requests\n", {"Retry-After": str(left)})
        return True

    def _dispatch(self, handler: _Handler) -> None:
        ex = _Exchange(handler, self)
        with self._lock:
            self._inflight += 1
            self._seq += 1
            seq = self._seq
        try:
            # A request body (unusual for GET/HEAD) must be drained to keep the
            # keep-alive stream in sync.
            length = int(ex.headers.get("content-length", "0") or 0)
            if length > 0:
                handler.rfile.read(length)
            self._route(ex)
        except _Aborted:
            handler.close_connection = True
            ex.finishing()
            with contextlib.suppress(OSError):
                # Flush what was sent, then FIN: the client sees a short body.
                handler.connection.shutdown(socket.SHUT_RDWR)
        except _DISCONNECT_ERRORS:
            handler.close_connection = True
        except OSError as e:
            handler.close_connection = True
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF):
                raise
        except Exception as e:
            # A bug in this module: answer 500 with the error so the test that
            # hit it fails loudly instead of seeing a silently closed socket.
            _log.exception("error handling %s %s", ex.method, ex.path)
            handler.close_connection = True
            if ex.status == 0:
                with contextlib.suppress(OSError):
                    ex.send_simple(500, f"{type(e).__name__}: {e}\n".encode(), {"Connection": "close"})
        finally:
            rec = ex.record()
            with self._idle:
                bisect.insort(self._records, (seq, rec), key=lambda item: item[0])
                self._inflight -= 1
                if ex.is_finishing:
                    self._finishing -= 1
                self._idle.notify_all()

    def _route(self, ex: _Exchange) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Hold:
    """Requests kept waiting by ``FileServer.hold``: ``arrived`` once one waits; ``release()`` lets them go."""

    arrived: threading.Event
    released: threading.Event

    def release(self) -> None:
        self.released.set()


class FileServer(_ServerBase):
    """A CDN stand-in: static files with ranges, pacing, signed URLs and faults.

    ``rate_limit`` caps bytes/second per connection. With ``sign_required``
    every request needs a valid, unexpired ``signed_url`` (else 403
    ``Request has expired``, as S3/CloudFront answer). ``clock`` is the wall
    clock signatures expire by (``time.time``); a test may set it to move time.
    """

    def __init__(
        self, host: str = "127.0.0.1", rate_limit: float | None = None, *, sign_required: bool = False
    ) -> None:
        super().__init__(host, rate_limit)
        self.sign_required = sign_required
        self._key = secrets.token_bytes(32)
        self._content: dict[str, _Content] = {}
        self._version = 0
        self._bearer: str | None = None
        self.clock: Callable[[], float] = time.time
        self._holds: dict[str, Hold] = {}
        # True: Range headers are ignored (200 with the whole body), like a server or proxy that cannot resume.
        self.ignore_range = False

    # -- content -------------------------------------------------------------

    def add_file(self, path: str, source: Path, *, filename: str | None = None) -> None:
        """Serve the file on disk ``source`` at URL path ``path`` (streamed, never loaded).

        ``filename`` adds a ``Content-Disposition`` header, like the HF CDN does.
        """
        self._put(path, Path(source), filename)

    def add_bytes(self, path: str, data: bytes, *, filename: str | None = None) -> None:
        """Serve small in-memory ``data`` at URL path ``path``."""
        self._put(path, bytes(data), filename)

    def replace_content(self, path: str, data_or_path: bytes | Path, *, keep_etag: bool = False) -> None:
        """Swap what ``path`` serves.

        By default ETag/Last-Modified change (an honest server whose content
        changed); ``keep_etag=True`` keeps them (silent corruption).
        """
        with self._lock:
            old = self._content.get(path)
        if old is None:
            raise KeyError(path)
        new = self._new_content(data_or_path, old.filename)
        if keep_etag:
            new.etag, new.last_modified = old.etag, old.last_modified
        with self._lock:
            self._content[path] = new

    def remove(self, path: str) -> None:
        """Stop serving ``path`` (404 from now on)."""
        with self._lock:
            self._content.pop(path, None)

    def _put(self, path: str, source: Path | bytes, filename: str | None) -> None:
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        content = self._new_content(source, filename)
        with self._lock:
            self._content[path] = content

    def _new_content(self, source: Path | bytes, filename: str | None) -> _Content:
        with self._lock:
            self._version += 1
            version = self._version
        return _make_content(source, filename, version)

    # -- faults and auth -------------------------------------------------------

    def fail_next(self, count: int, status: int = 503, path: str | None = None) -> None:
        """Answer ``status`` with a short body to the next ``count`` GETs (of ``path``)."""
        self._add_fault(_Fault("fail", count, path, status=status))

    def drop_next(self, count: int, after_bytes: int, path: str | None = None) -> None:
        """Cut the next ``count`` GET responses after ``after_bytes`` body bytes."""
        self._add_fault(_Fault("drop", count, path, after_bytes=after_bytes))

    def stall_next(self, count: int, seconds: float, path: str | None = None, *, after_bytes: int = 65536) -> None:
        """Send headers and ``after_bytes`` of body, then nothing for ``seconds``, then close."""
        self._add_fault(_Fault("stall", count, path, after_bytes=after_bytes, seconds=seconds))

    def rate_limit_next(self, retry_after: float, path: str | None = None) -> None:
        """Answer the next request (of ``path``) ``429 Too Many Requests`` with ``Retry-After: retry_after``, and
        every further one until those seconds have passed (with the seconds left), as a busy CDN does."""
        self._rate_limit(path, retry_after)

    def hold(self, path: str) -> Hold:
        """Keep every request for ``path`` (HEAD and GET) waiting, with no answer, until ``release()``; a slow
        server or hub. ``arrived`` is set once a request waits."""
        hold = Hold(threading.Event(), threading.Event())
        with self._lock:
            self._holds[path] = hold
        return hold

    def _wait_if_held(self, path: str) -> None:
        with self._lock:
            hold = self._holds.get(path)
        if hold is None:
            return
        hold.arrived.set()
        while not hold.released.wait(_POLL_SLICE):
            if self._stop_event.is_set():
                raise _Aborted("server stopping")

    def require_bearer(self, token: str | None) -> None:
        """Demand ``Authorization: Bearer <token>`` on every request (None: no auth)."""
        self._bearer = token

    # -- signed URLs -----------------------------------------------------------

    def signed_url(self, path: str, ttl: float) -> str:
        """Absolute URL for ``path`` valid for ``ttl`` seconds."""
        now = self.clock()
        expires = int(now + ttl)
        # Round up so ttl=1 gives at least one full second of validity.
        if expires < now + ttl:
            expires += 1
        return f"{self.url}{quote(path)}?expires={expires}&sig={self._sign(path, expires)}"

    def _sign(self, path: str, expires: int) -> str:
        msg = f"{path}\n{expires}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def _signature_ok(self, ex: _Exchange) -> bool:
        try:
            expires = int(ex.params["expires"])
            sig = ex.params["sig"]
        except (KeyError, ValueError):
            return False
        if not hmac.compare_digest(sig, self._sign(ex.path, expires)):
            return False
        return self.clock() <= expires

    # -- routing ---------------------------------------------------------------

    def _route(self, ex: _Exchange) -> None:
        self._wait_if_held(ex.path)
        if ex.method not in ("GET", "HEAD"):
            ex.send_simple(405, b"Method Not Allowed\n", {"Allow": "GET, HEAD"})
            return
        token = self._bearer
        if token is not None and not hmac.compare_digest(
            ex.headers.get("authorization", "").encode(), f"Bearer {token}".encode()
        ):
            ex.send_simple(401, b"Unauthorized\n", {"WWW-Authenticate": 'Bearer realm="test"'})
            return
        if self.sign_required and not self._signature_ok(ex):
            ex.send_simple(403, b"Request has expired", content_type="text/plain")
            return
        if self._limited(ex, ex.path):
            return
        if ex.method == "GET":
            fault = self._take_fault(("fail",), ex.path)
            if fault is not None:
                ex.fault = "fail"
                ex.send_simple(fault.status, f"injected failure {fault.status}\n".encode())
                return
        with self._lock:
            content = self._content.get(ex.path)
        if content is None:
            ex.send_simple(404, b"Not Found\n")
            return
        ex.send_content(content, rate_limit=self.rate_limit, faults=True, ranges=not self.ignore_range)


# ---------------------------------------------------------------------------
# Fake Hugging Face Hub
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    """A file registered on a FakeHub.

    ``etag`` is what the hub reports as the file's etag (``X-Linked-Etag`` for
    LFS files, i.e. the sha256 given or computed; the git blob sha1 for
    non-LFS files). ``cdn_path`` is None for non-LFS files (served by the hub).
    """

    repo_id: str
    path_in_repo: str
    revision: str
    commit: str
    size: int
    sha256: str
    blob_id: str
    etag: str
    lfs: bool
    cdn_path: str | None
    source: Path | None = field(default=None, repr=False)


def _hash_source(source: Path | bytes) -> tuple[int, str, str]:
    """(size, sha256, git blob sha1) of the content, streaming files."""
    sha = hashlib.sha256()
    if isinstance(source, bytes):
        size = len(source)
        sha.update(source)
        git = hashlib.sha1(b"blob %d\0" % size + source)
        return size, sha.hexdigest(), git.hexdigest()
    size = os.stat(source).st_size
    git = hashlib.sha1(b"blob %d\0" % size)
    with open(source, "rb") as f:
        while block := f.read(4 * 1024 * 1024):
            sha.update(block)
            git.update(block)
    return size, sha.hexdigest(), git.hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_commit_hash(rev: str) -> bool:
    return len(rev) == 40 and all(c in "0123456789abcdef" for c in rev)


@dataclass
class _Repo:
    repo_id: str
    refs: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit
    commits: dict[str, dict[str, FileInfo]] = field(default_factory=dict)  # commit -> path -> info
    gate_token: str | None = None


class FakeHub(_ServerBase):
    """Hugging Face Hub stand-in serving ``resolve`` redirects to a signing CDN.

    The CDN (``.cdn``) is a FileServer on another loopback host (default
    127.0.0.2, ``sign_required=True``) so the library treats it as off-hub and
    drops the Authorization header, as with the real CDN. A CDN passed in is
    started and stopped by the caller. ``url_ttl`` is the validity of the
    signed URLs handed out and may be changed at any time. LFS files live on
    the CDN at ``/lfs/{repo_id}/{commit}/{path_in_repo}``.
    """

    def __init__(self, cdn: FileServer | None = None, url_ttl: float = 3600.0, host: str = "127.0.0.1") -> None:
        super().__init__(host, None)
        self._owns_cdn = cdn is None
        self.cdn: FileServer = cdn if cdn is not None else FileServer("127.0.0.2", sign_required=True)
        self.url_ttl = url_ttl
        self._repos: dict[str, _Repo] = {}
        self._files: dict[str, _Content] = {}  # hub-served (non-LFS) content by "commit/path"

    def start(self) -> None:
        if self._owns_cdn:
            self.cdn.start()
        super().start()

    def stop(self) -> None:
        super().stop()
        if self._owns_cdn:
            self.cdn.stop()

    # -- registration ----------------------------------------------------------

    def add_file(
        self,
        repo_id: str,
        path_in_repo: str,
        source: Path | bytes,
        revision: str = "main",
        commit: str | None = None,
        sha256: str | None = None,
        *,
        lfs: bool = True,
    ) -> FileInfo:
        """Register a file; both ``revision`` and its commit hash resolve to it.

        ``sha256`` overrides the computed hash (to fake a hub whose metadata
        disagrees with the bytes). ``commit`` defaults to a fixed fake hash per
        repo; moving a branch to a new commit carries the branch's files over.
        ``lfs=False`` makes the hub serve the bytes itself (like config.json),
        with the git blob sha1 as ETag and no redirect.
        """
        src: Path | bytes = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source)
        size, real_sha, git_sha1 = _hash_source(src)
        if sha256 is None:
            sha256 = real_sha
        if commit is None:
            commit = revision if _is_commit_hash(revision) else self.default_commit(repo_id)
        if not _is_commit_hash(commit):
            raise ValueError("commit must be 40 lowercase hex digits")

        if lfs:
            blob_id = _git_blob_id(_lfs_pointer(sha256, size))
            cdn_path = f"/lfs/{repo_id}/{commit}/{path_in_repo}"
            name = path_in_repo.rsplit("/", 1)[-1]
            if isinstance(src, bytes):
                self.cdn.add_bytes(cdn_path, src, filename=name)
            else:
                self.cdn.add_file(cdn_path, src, filename=name)
            etag = sha256
        else:
            blob_id, cdn_path, etag = git_sha1, None, git_sha1
        info = FileInfo(
            repo_id=repo_id,
            path_in_repo=path_in_repo,
            revision=revision,
            commit=commit,
            size=size,
            sha256=sha256,
            blob_id=blob_id,
            etag=etag,
            lfs=lfs,
            cdn_path=cdn_path,
            source=src if isinstance(src, Path) else None,
        )
        content = None if lfs else _make_content(src, None, 0)
        if content is not None:
            content.etag = f'"{git_sha1}"'
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo(repo_id))
            previous = repo.refs.get(revision)
            if commit not in repo.commits:
                # A new commit on a branch starts from the branch's previous tree.
                repo.commits[commit] = dict(repo.commits.get(previous, {})) if previous else {}
            repo.commits[commit][path_in_repo] = info
            if not _is_commit_hash(revision):
                repo.refs[revision] = commit
            if content is not None:
                self._files[f"{commit}/{path_in_repo}"] = content
        return info

    @staticmethod
    def default_commit(repo_id: str) -> str:
        """The fake commit hash used when ``add_file`` gets no ``commit``."""
        return hashlib.sha1(f"fakehub:{repo_id}".encode()).hexdigest()

    def gate(self, repo_id: str, token: str | None) -> None:
        """Gate a repo: no token -> 401, wrong token -> 403 (``GatedRepo``). None ungates."""
        with self._lock:
            self._repos.setdefault(repo_id, _Repo(repo_id)).gate_token = token

    def fail_next(self, count: int, status: int = 503, path_in_repo: str | None = None) -> None:
        """Answer ``status`` to the next ``count`` resolve requests (HEAD or GET)."""
        self._add_fault(_Fault("fail", count, path_in_repo, status=status))

    def rate_limit_next(self, retry_after: float, path_in_repo: str | None = None) -> None:
        """Answer the next resolve request (of ``path_in_repo``) ``429`` with ``Retry-After: retry_after``, and every
        further one until those seconds have passed, as the hub does with a client that asks too often."""
        self._rate_limit(path_in_repo, retry_after)

    def file_url(self, repo_id: str, path_in_repo: str, revision: str = "main") -> str:
        """The hub's resolve URL, as ``hf_hub_url(..., endpoint=hub.url)`` builds it."""
        return f"{self.url}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path_in_repo)}"

    @contextlib.contextmanager
    def use_as_endpoint(self) -> Iterator[str]:
        """Point ``HF_ENDPOINT`` (and an already imported huggingface_hub) at this hub."""
        saved_env = os.environ.get("HF_ENDPOINT")
        os.environ["HF_ENDPOINT"] = self.url
        constants = sys.modules.get("huggingface_hub.constants")
        hf_api = sys.modules.get("huggingface_hub.hf_api")
        saved: list[tuple[Any, str, Any]] = []

        def patch(obj: Any, attr: str, value: Any) -> None:
            saved.append((obj, attr, getattr(obj, attr)))
            setattr(obj, attr, value)

        if constants is not None:
            patch(constants, "ENDPOINT", self.url)
            patch(constants, "HUGGINGFACE_CO_URL_TEMPLATE", self.url + "/{repo_id}/resolve/{revision}/{filename}")
        if hf_api is not None and hasattr(hf_api, "api"):
            patch(hf_api.api, "endpoint", self.url)
        try:
            yield self.url
        finally:
            for obj, attr, value in reversed(saved):
                setattr(obj, attr, value)
            if saved_env is None:
                os.environ.pop("HF_ENDPOINT", None)
            else:
                os.environ["HF_ENDPOINT"] = saved_env

    # -- routing ---------------------------------------------------------------

    def _error(self, ex: _Exchange, status: int, code: str | None, message: str, **headers: str) -> None:
        hdrs = {"X-Error-Message": message, **headers}
        if code is not None:
            hdrs["X-Error-Code"] = code
        ex.send_json(status, {"error": message}, hdrs)

    def _find_repo(self, segs: list[str]) -> tuple[_Repo | None, list[str]]:
        """Split URL segments into (repo, segments after the repo id).

        Repo ids have one or two segments (``gpt2``, ``org/name``); a leading
        ``models/`` is accepted too.
        """
        with self._lock:
            for skip in (0, 1):
                if skip and segs[:1] != ["models"]:
                    continue
                for n in (2, 1):
                    if len(segs) >= skip + n:
                        repo = self._repos.get("/".join(segs[skip : skip + n]))
                        if repo is not None:
                            return repo, segs[skip + n :]
        return None, []

    def _check_gate(self, ex: _Exchange, repo: _Repo) -> bool:
        token = repo.gate_token
        if token is None:
            return True
        auth = ex.headers.get("authorization")
        if auth is None:
            self._error(
                ex,
                401,
                "GatedRepo",
                f"Access to model {repo.repo_id} is restricted. You must have access to it and be authenticated "
                "to access it. Please log in.",
            )
            return False
        if not hmac.compare_digest(auth.encode(), f"Bearer {token}".encode()):
            self._error(
                ex,
                403,
                "GatedRepo",
                f"Access to model {repo.repo_id} is restricted and you are not in the authorized list.",
            )
            return False
        return True

    def _resolve_revision(self, repo: _Repo, revision: str) -> str | None:
        with self._lock:
            if revision in repo.refs:
                return repo.refs[revision]
            if revision in repo.commits:
                return revision
        return None

    def _route(self, ex: _Exchange) -> None:
        # Split the raw path: the revision is percent-encoded with safe="" so
        # "refs/pr/1" arrives as one segment "refs%2Fpr%2F1".
        segs = [unquote(s) for s in ex.raw_path.split("/")[1:]]
        if segs[:2] == ["api", "models"]:
            self._route_api(ex, segs[2:])
            return
        if "resolve" in segs[:4]:
            self._route_resolve(ex, segs)
            return
        self._error(ex, 404, None, "Not Found")

    def _route_resolve(self, ex: _Exchange, segs: list[str]) -> None:
        if ex.method not in ("GET", "HEAD"):
            self._error(ex, 405, None, "Method Not Allowed")
            return
        repo, rest = self._find_repo(segs)
        if repo is None or not rest or rest[0] != "resolve" or len(rest) < 3:
            self._error(ex, 404, "RepoNotFound", "Repository not found")
            return
        if not self._check_gate(ex, repo):
            return
        revision, path_in_repo = rest[1], "/".join(rest[2:])
        if self._limited(ex, path_in_repo):
            return
        fault = self._take_fault(("fail",), path_in_repo)
        if fault is not None:
            ex.fault = "fail"
            self._error(ex, fault.status, None, f"injected failure {fault.status}")
            return
        commit = self._resolve_revision(repo, revision)
        if commit is None:
            self._error(ex, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        with self._lock:
            info = repo.commits[commit].get(path_in_repo)
            content = self._files.get(f"{commit}/{path_in_repo}")
        if info is None:
            self._error(ex, 404, "EntryNotFound", "Entry not found", **{"X-Repo-Commit": commit})
            return
        if not info.lfs:
            assert content is not None
            ex.send_content(content, {"X-Repo-Commit": commit})
            return
        assert info.cdn_path is not None
        location = self.cdn.signed_url(info.cdn_path, self.url_ttl)
        ex.send_simple(
            302,
            b"",
            {
                "Location": location,
                "X-Repo-Commit": commit,
                "X-Linked-Size": str(info.size),
                "X-Linked-Etag": f'"{info.sha256}"',
                # Like the real hub, the plain ETag is the git oid of the LFS
                # pointer, not the sha256: clients must use X-Linked-Etag.
                "ETag": f'"{info.blob_id}"',
                "Accept-Ranges": "bytes",
            },
        )

    def _route_api(self, ex: _Exchange, segs: list[str]) -> None:
        if ex.method not in ("GET", "HEAD"):
            self._error(ex, 405, None, "Method Not Allowed")
            return
        repo, rest = self._find_repo(segs)
        if repo is None:
            self._error(ex, 404, "RepoNotFound", "Repository not found")
            return
        # Metadata of a gated repo is public on the real hub; only files are gated.
        if not rest or rest[0] == "revision":
            revision = rest[1] if len(rest) > 1 else "main"
            commit = self._resolve_revision(repo, revision)
            if commit is None:
                self._error(ex, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return
            ex.send_json(200, self._model_info(repo, commit))
            return
        if rest[0] == "tree" and len(rest) >= 2:
            commit = self._resolve_revision(repo, rest[1])
            if commit is None:
                self._error(ex, 404, "RevisionNotFound", f"Invalid rev id: {rest[1]}")
                return
            tree = self._tree(repo, commit, "/".join(rest[2:]), ex.params.get("recursive", "").lower() == "true")
            if tree is None:
                self._error(ex, 404, "EntryNotFound", "Entry not found", **{"X-Repo-Commit": commit})
                return
            ex.send_json(200, tree)
            return
        self._error(ex, 404, None, "Not Found")

    def _model_info(self, repo: _Repo, commit: str) -> dict[str, Any]:
        with self._lock:
            files = list(repo.commits[commit].values())
            gated: str | bool = "manual" if repo.gate_token else False
        siblings = []
        for info in sorted(files, key=lambda i: i.path_in_repo):
            sib: dict[str, Any] = {"rfilename": info.path_in_repo, "size": info.size, "blobId": info.blob_id}
            if info.lfs:
                ptr = len(_lfs_pointer(info.sha256, info.size))
                sib["lfs"] = {"size": info.size, "sha256": info.sha256, "pointerSize": ptr}
            siblings.append(sib)
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": commit,
            "private": False,
            "gated": gated,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }

    def _tree(self, repo: _Repo, commit: str, base: str, recursive: bool) -> list[dict[str, Any]] | None:
        with self._lock:
            files = list(repo.commits[commit].values())
        prefix = base.rstrip("/") + "/" if base else ""
        if base and not any(f.path_in_repo.startswith(prefix) for f in files):
            return None
        entries: dict[str, dict[str, Any]] = {}
        for info in files:
            if not info.path_in_repo.startswith(prefix):
                continue
            parts = info.path_in_repo[len(prefix) :].split("/")
            # Directories on the way down to the file.
            depth = len(parts) - 1 if recursive else min(1, len(parts) - 1)
            for i in range(1, depth + 1):
                d = prefix + "/".join(parts[:i])
                entries.setdefault(
                    d, {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                )
            if len(parts) == 1 or recursive:
                entry: dict[str, Any] = {
                    "type": "file",
                    "oid": info.blob_id,
                    "size": info.size,
                    "path": info.path_in_repo,
                }
                if info.lfs:
                    ptr = len(_lfs_pointer(info.sha256, info.size))
                    entry["lfs"] = {"oid": info.sha256, "size": info.size, "pointerSize": ptr}
                entries[info.path_in_repo] = entry
        return [entries[k] for k in sorted(entries)]

