"""Verify through the loop, for files with no sha256 to hash against: what can be checked is, in words."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from downloader import recheck
from downloader.state import DownloadState, Store


def _safetensors(path: Path, data_bytes: int = 64) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [data_bytes // 4], "data_offsets": [0, data_bytes]}}).encode()
    blob = struct.pack("<Q", len(header)) + header + bytes(data_bytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return blob


@pytest.fixture
def store(settings) -> Store:
    with Store(settings.db_path) as s:
        yield s


def _done_row(store: Store, dest: str, size: int | None) -> None:
    store.upsert("m", source="https://example.invalid/m", dest=dest, size=size, sha256=None, sha256_origin=None)
    store.transition("m", DownloadState.DONE, "in place", bytes_done=size or 0)


def test_a_whole_safetensors_without_sha256_is_checked_again_and_stays_done(settings, store) -> None:
    blob = _safetensors(settings.models_dir / "loras" / "m.safetensors")
    _done_row(store, "loras/m.safetensors", len(blob))
    assert recheck.begin(store, ["m"]) == ["m"]
    assert recheck.before_hash(store, settings.models_dir, store.get("m")) is None  # nothing to hash
    row = store.get("m")
    assert row.state == "done" and not row.verified
    assert store.events("m")[0].message == "size and safetensors header checked again (no sha256 known): unverified"


def test_a_truncated_safetensors_without_sha256_is_moved_aside_and_failed(settings, store) -> None:
    path = settings.models_dir / "loras" / "m.safetensors"
    blob = _safetensors(path)
    path.write_bytes(blob[:-10])  # cut short after it was placed (a copy that stopped, a disk that filled)
    _done_row(store, "loras/m.safetensors", None)  # no size known either: only the structure can tell
    recheck.begin(store, ["m"])
    recheck.before_hash(store, settings.models_dir, store.get("m"))
    row = store.get("m")
    assert row.state == "failed" and "truncated safetensors file" in row.error and "moved to" in row.error
    assert not path.exists() and list(path.parent.glob("m.safetensors.corrupt-*")), "ComfyUI must not load it"


def test_another_file_without_sha256_says_it_is_size_checked_only(settings, store) -> None:
    path = settings.models_dir / "vae" / "v.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * 100)
    _done_row(store, "vae/v.bin", 100)
    recheck.begin(store, ["m"])
    recheck.before_hash(store, settings.models_dir, store.get("m"))
    assert store.get("m").state == "done"
    assert store.events("m")[0].message == "size checked again (no sha256 known): unverified"
