"""The aria2c daemon this package starts and owns, and the few aria2p calls the Manager needs.

aria2p types stay inside this module: the Manager sees `Aria2Status`, our own small record.
The RPC secret is random per start and reaches aria2c through a 0600 config file that is deleted as
soon as the daemon answers, so it never appears in a command line or on disk for long.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aria2p
import requests

from .config import Settings, pod_file_part
from .errors import Aria2Error

# The error codes aria2 reports, and what they mean for a download, are in faults.py.


@dataclass(frozen=True)
class Aria2Status:
    """What the Manager needs to know about one aria2 download."""

    gid: str
    status: str  # active, waiting, paused, error, complete, removed
    total: int
    completed: int
    speed: int
    bitfield: str | None
    piece_length: int
    error_code: str | None
    error_message: str | None


def _size_bytes(text: str) -> int:
    """'32M' -> 33554432 (aria2's units are powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1:].upper() in units else int(text)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Aria2Daemon:
    """Start, watch and stop one aria2c process with RPC on loopback."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.api: aria2p.API | None = None
        self.port = 0
        # Per pod: several pods' daemons may log into one shared state folder.
        self.log_path = settings.state_dir / f"aria2-{pod_file_part(settings.pod_id)}.log"

    # --- lifecycle ----------------------------------------------------------------------------------
    def _options(self, port: int, secret: str) -> dict[str, str]:
        s = self.settings
        return {
            "enable-rpc": "true",
            "rpc-listen-all": "false",  # loopback only
            "rpc-listen-port": str(port),
            "rpc-secret": secret,
            "rpc-allow-origin-all": "false",
            "stop-with-process": str(os.getpid()),  # never outlive the process that owns it (kill -9 included)
            "dir": str(s.models_dir),
            "continue": "true",
            "auto-file-renaming": "false",
            "allow-overwrite": "false",
            "auto-save-interval": "1",  # control file every second, not every 60 s: less fetched again after a crash
            "file-allocation": "none",  # instant start on any filesystem; free space is checked up front instead
            "disk-cache": "0",  # a piece aria2 reports complete is on disk, so the hasher can read it
            "max-concurrent-downloads": str(max(s.max_concurrent, 1)),
            "max-connection-per-server": str(s.connections),
            "split": str(s.connections),
            "min-split-size": s.min_split_size,
            # Connections take consecutive min-split-size chunks from the front, so the completed prefix (what
            # the sha256 may read) trails the download by about connections x min-split-size instead of
            # growing at 1/connections of the speed: the hash is done moments after the last byte
            # (docs/BENCHMARKS.md, "Tuning notes").
            "stream-piece-selector": "inorder",
            "max-overall-download-limit": s.max_download_limit,
            "max-tries": str(s.aria2_max_tries),
            "retry-wait": str(s.aria2_retry_wait),
            "connect-timeout": "15",
            "timeout": "30",
            "max-file-not-found": "3",
            "log": str(self.log_path),
            "log-level": "notice",  # info/debug would log request headers, tokens included
            "console-log-level": "warn",
            "summary-interval": "0",
            "show-console-readout": "false",
            "enable-http-pipelining": "false",
            "check-certificate": "true",
        }

    def start(self) -> None:
        """Start aria2c and wait (bounded) until its RPC answers; raise Aria2Error with the reason otherwise."""
        exe = shutil.which(self.settings.aria2c)
        if exe is None:
            raise Aria2Error(
                f"aria2c not found ({self.settings.aria2c!r} is not on PATH): install it with "
                "`apt-get install aria2` or set ARIA2C to its path"
            )
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        s.models_dir.mkdir(parents=True, exist_ok=True)
        port, secret = free_port(), secrets.token_hex(24)
        conf = s.state_dir / f"aria2.{pod_file_part(s.pod_id)}.{os.getpid()}.conf"
        # The file holds the RPC secret: it goes on every path out of here, a failed start included.
        try:
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.writelines(f"{k}={v}\n" for k, v in self._options(port, secret).items())
            self._spawn(exe, conf)
            self.port = port
            self.api = aria2p.API(aria2p.Client(host="http://127.0.0.1", port=port, secret=secret, timeout=10))
            try:
                self._wait_ready()
            except Aria2Error:
                self.stop()
                raise
        finally:
            conf.unlink(missing_ok=True)

    def _spawn(self, exe: str, conf: Path) -> None:
        log = open(self.settings.state_dir / f"aria2-{pod_file_part(self.settings.pod_id)}.stdout.log", "ab")
        try:
            self.proc = subprocess.Popen(
                [exe, f"--conf-path={conf}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C must not kill it before we save state
            )
        except OSError as e:
            raise Aria2Error(f"cannot start aria2c ({exe}): {e.strerror or e}") from None
        finally:
            log.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.aria2_start_timeout
        assert self.api is not None and self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Aria2Error(f"aria2c exited at start with code {self.proc.returncode}: {self._log_tail()}")
            try:
                self.api.client.get_version()
                return
            except (requests.RequestException, aria2p.ClientException):
                time.sleep(0.05)
        raise Aria2Error(f"aria2c did not answer RPC within {self.settings.aria2_start_timeout:.0f} s")

    def _log_tail(self) -> str:
        return (_tail(self.settings.state_dir / f"aria2-{pod_file_part(self.settings.pod_id)}.stdout.log") + "\n" + _tail(self.log_path)).strip()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        """Whether the aria2c process this daemon started is still running."""
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise Aria2Error if the daemon died."""
        if not self.alive:
            if self.proc is None:
                raise Aria2Error("aria2c is not started")
            raise Aria2Error(f"aria2c exited (code {self.proc.returncode}): {self._log_tail()}")

    def stop(self, timeout: float = 10.0, graceful: bool = True) -> None:
        """Stop aria2c (it writes its control files on the way out), then make sure it is gone.

        `graceful=False` when no download is active: there is nothing to save, so skip aria2's ~1 s halt."""
        if self.proc is None:
            return
        if not graceful and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.poll() is None:
            # SIGTERM runs the same orderly halt as the shutdown RPC (control files saved) but takes
            # ~1 s instead of the RPC's ~4 s.
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Aria2Daemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- downloads --------------------------------------------------------------------------------
    def _require_api(self) -> aria2p.API:
        if self.api is None:
            raise Aria2Error("aria2c is not started")
        return self.api

    def add(
        self, url: str, directory: Path, out: str, headers: list[str], size: int | None = None, *, split: bool = True
    ) -> str:
        """Start (or resume, thanks to the control file next to `out`) a download; returns its gid.

        With the size known, a file smaller than connections x min-split-size gets smaller chunks, so a
        250 MB VAE still uses every connection (never below 1 MiB). `split=False`: one connection from the
        start, for a server that ignores Range (every extra connection would get the whole file)."""
        options: dict[str, object] = {"dir": str(directory), "out": out}
        default = _size_bytes(self.settings.min_split_size)
        if not split:
            options["split"] = "1"
            options["max-connection-per-server"] = "1"
        elif size and default and size < default * self.settings.connections:
            options["min-split-size"] = str(max(1 << 20, size // self.settings.connections))
        if headers:
            options["header"] = headers  # over RPC only: never on a command line or in a URL
        try:
            return self._require_api().client.add_uri([url], options)
        except (requests.RequestException, aria2p.ClientException) as e:
            self.check_alive()
            raise Aria2Error(f"aria2c refused the download: {e}") from None

    def status(self, gid: str) -> Aria2Status | None:
        """The download's status, or None if aria2 no longer knows the gid."""
        keys = [
            "gid",
            "status",
            "totalLength",
            "completedLength",
            "downloadSpeed",
            "bitfield",
            "pieceLength",
            "errorCode",
            "errorMessage",
        ]
        try:
            st = self._require_api().client.tell_status(gid, keys)
        except aria2p.ClientException:
            return None
        except requests.RequestException:
            self.check_alive()
            raise
        return Aria2Status(
            gid=gid,
            status=st.get("status", "removed"),
            total=int(st.get("totalLength", 0)),
            completed=int(st.get("completedLength", 0)),
            speed=int(st.get("downloadSpeed", 0)),
            bitfield=st.get("bitfield"),
            piece_length=int(st.get("pieceLength", 0) or 0),
            error_code=st.get("errorCode"),
            error_message=st.get("errorMessage"),
        )

    def remove(self, gid: str) -> None:
        """Stop a download and forget it, keeping its partial file and control file (for resume)."""
        client = self._require_api().client
        try:
            client.force_remove(gid)
        except aria2p.ClientException:
            pass  # already finished or removed
        # Wait until aria2 has let go of the file (it writes the control file on the way out).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if client.tell_status(gid, ["status"]).get("status") in ("removed", "complete", "error"):
                    break
            except aria2p.ClientException:
                break
            time.sleep(0.02)
        try:
            client.remove_download_result(gid)
        except aria2p.ClientException:
            pass
