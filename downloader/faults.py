"""What an aria2 error means for a download, from aria2's error code (aria2c(1), "EXIT STATUS") first and its
message only as a fallback: a disk that is full, a server that cannot resume, a rate limit, a refusal."""

from __future__ import annotations

import re
from dataclasses import dataclass

# aria2 error codes we act on.
ERR_NOT_FOUND = "3"
ERR_NO_RESUME = "8"  # the server answered a ranged request with the whole file: it cannot resume
ERR_DISK_FULL = "9"  # "there was not enough disk space available"
FILE_IO_ERRORS = frozenset({"15", "16", "17"})  # open / create / read-write failures: ENOSPC among many causes
ERR_HTTP_BAD = "22"  # an unexpected HTTP status: its message says "status=NNN"
ERR_AUTH = "24"  # HTTP authorization failed (401)

# Words aria2 passes on from the kernel (strerror(ENOSPC)) or says itself when the disk is full.
_DISK_FULL_TEXT = ("no space left on device", "not enough disk space")
_STATUS = re.compile(r"status=(\d{3})")

DISK_FULL = "disk full"
NO_RESUME = "no resume"
RATE_LIMITED = "rate limited"
UNAUTHORISED = "unauthorised"  # 401
FORBIDDEN = "forbidden"  # 403
NOT_FOUND = "not found"
OTHER = "other"


@dataclass(frozen=True)
class Aria2Failure:
    """An aria2 error, classified."""

    kind: str
    code: str
    message: str
    status: int | None  # the HTTP status aria2 names, if any

    @property
    def retryable(self) -> bool:
        return self.kind not in (NOT_FOUND, UNAUTHORISED)

    def words(self) -> str:
        """aria2's own account of it, for the row's error."""
        return f"aria2 error {self.code}: {self.message}"


def classify(code: str | None, message: str | None) -> Aria2Failure:
    """Classify aria2's errorCode / errorMessage."""
    code, message = (code or "?").strip(), (message or "").strip()
    found = _STATUS.search(message)
    status = int(found.group(1)) if found else None
    text = message.lower()
    says_full = any(t in text for t in _DISK_FULL_TEXT)
    if code == ERR_DISK_FULL or (code in FILE_IO_ERRORS and says_full):
        kind = DISK_FULL
    elif code == ERR_NO_RESUME:
        kind = NO_RESUME
    elif status == 429:
        kind = RATE_LIMITED
    elif code == ERR_AUTH or status == 401:
        kind = UNAUTHORISED
    elif status == 403:
        kind = FORBIDDEN
    elif code == ERR_NOT_FOUND or status == 404:
        kind = NOT_FOUND
    elif says_full:  # the message only as a fallback: an error code we do not know, naming ENOSPC
        kind = DISK_FULL
    else:
        kind = OTHER
    return Aria2Failure(kind, code, message, status)
