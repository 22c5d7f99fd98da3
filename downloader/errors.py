"""Typed errors: the core raises these, the CLI and web layer turn them into one clear line."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB': sizes in messages people read."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class DownloaderError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(DownloaderError, ValueError):
    """An environment variable or option has a value we cannot use."""


class ManifestError(DownloaderError, ValueError):
    """A manifest is unusable; names the file, the model id and the field when known."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        model_id: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.file, self.model_id, self.field, self.line, self.detail = file, model_id, field, line, message
        where = []
        if file:
            where.append(f"{file}:{line}" if line else file)
        if model_id:
            where.append(f"model {model_id!r}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class UnknownPresetError(ManifestError):
    """A preset was asked for that no manifest defines."""


class SourceError(DownloaderError):
    """The source (hub or URL) could not be resolved; the message says what the user can do. A rate limit
    (429) carries the seconds the server asked us to wait (`retry_after`, None when it did not say)."""

    def __init__(
        self, message: str, *, status: int | None = None, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        self.status, self.retryable, self.retry_after = status, retryable, retry_after
        super().__init__(message)

    @property
    def rate_limited(self) -> bool:
        return self.status == 429


class ChecksumMismatch(DownloaderError):
    """The bytes on disk are not the bytes the manifest or the hub promised."""

    def __init__(self, path: str, expected: str, got: str) -> None:
        self.path, self.expected, self.got = path, expected, got
        super().__init__(f"checksum mismatch for {path}: expected sha256 {expected}, got {got}")


class SizeMismatch(DownloaderError):
    """The file on disk has the wrong length."""

    def __init__(self, path: str, expected: int, got: int) -> None:
        self.path, self.expected, self.got = path, expected, got
        super().__init__(f"size mismatch for {path}: expected {expected} bytes, got {got}")


class DiskSpaceError(DownloaderError):
    """Not enough free space for what was asked."""

    def __init__(self, path: str, need: int, free: int) -> None:
        self.path, self.need, self.free = path, need, free
        super().__init__(
            f"not enough disk space in {path}: need {human_bytes(need)}, free {human_bytes(free)} "
            f"(short by {human_bytes(need - free)})"
        )


class Aria2Error(DownloaderError):
    """aria2c is missing, would not start, or died."""


class WorkspaceBusy(DownloaderError):
    """Another downloader process owns this workspace's downloads."""
