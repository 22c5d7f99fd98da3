"""Re-hash files already in place (`downloader verify`): a bad one is moved aside and its row marked failed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from .config import Settings
from .files import file_size, quarantine
from .manifest import confine
from .state import DownloadState, Store
from .verify import sha256_file

S = DownloadState


@dataclass(frozen=True)
class CheckResult:
    """One file's verdict: ok, unverified (no sha256 known, size right), missing or mismatch."""

    id: str
    dest: str
    result: str
    message: str

    @property
    def bad(self) -> bool:
        return self.result in ("missing", "mismatch")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def reverify(
    settings: Settings, store: Store, only: Sequence[str] = (), on_result: Callable[[CheckResult], None] | None = None
) -> list[CheckResult]:
    """Check every done file (or those in `only`) against its size and sha256."""
    results = []
    for row in store.downloads(list(only) if only else None):
        if row.state != S.DONE.value:
            continue
        dest = confine(settings.models_dir, row.dest)
        size = file_size(dest)
        if size is None:
            result, message = "missing", f"{dest} is missing"
        elif row.size is not None and size != row.size:
            result, message = "mismatch", f"size mismatch: expected {row.size} bytes, got {size}"
        elif not row.sha256:
            result, message = "unverified", f"{size} bytes, no sha256 known"
        else:
            digest = sha256_file(dest)
            ok = digest == row.sha256
            result = "ok" if ok else "mismatch"
            message = "sha256 ok" if ok else f"checksum mismatch: expected {row.sha256}, got {digest}"
        if result == "mismatch":
            message += f"; moved to {quarantine(dest).name}"  # ComfyUI must not keep loading it
        if result in ("missing", "mismatch"):
            store.transition(row.id, S.VERIFYING, "verify")
            store.transition(row.id, S.FAILED, message, level="error", error=message)
        check = CheckResult(row.id, row.dest, result, message)
        results.append(check)
        if on_result is not None:
            on_result(check)
    return results
