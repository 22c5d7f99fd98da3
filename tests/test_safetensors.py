"""Files without a sha256 (#13): a `.safetensors` gets a structural check before it is placed, so a truncated one
never is; other files are placed as "unverified", saying what was (not) checked; a `.part` whose control file was
lost is never placed unverified (it starts over)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from downloader.fetch import fetch
from downloader.jobs import Job
from downloader.manifest import ModelSpec
from downloader.placing import SETTLED, finish
from downloader.state import DownloadState, Store
from downloader.structure import safetensors_problem
from downloader.verify import HashTask


def spec(source: str, dest: str = "loras/model.safetensors", **kw: object) -> ModelSpec:
    return ModelSpec(id=kw.pop("id", "model"), source=source, dest=dest, **kw)  # type: ignore[arg-type]


def safetensors(path: Path, tensors: dict[str, int], metadata: dict[str, str] | None = None) -> Path:
    """Write a real safetensors file: tensor name -> bytes of F32 data, back to back, random content."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata is not None else {}
    offset = 0
    for name, n in tensors.items():
        header[name] = {"dtype": "F32", "shape": [n // 4], "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + os.urandom(offset))
    return path


def last_event(settings, download_id: str = "model") -> str:
    with Store(settings.db_path) as store:
        return store.events(download_id, limit=1)[0].message


# --- the check itself --------------------------------------------------------------------------------------------
def test_a_whole_safetensors_file_passes_and_metadata_is_not_a_tensor(tmp_path):
    f = safetensors(tmp_path / "m.safetensors", {"a": 4096, "b": 1 << 20}, metadata={"format": "pt"})
    assert safetensors_problem(f) is None


@pytest.mark.parametrize(
    ("cut", "words"),
    [
        (100, "truncated safetensors file: its header describes"),  # the data cut short
        (-1, "truncated safetensors file: its header alone needs"),  # the header cut short
    ],
)
def test_a_cut_safetensors_file_is_named_truncated(tmp_path, cut, words):
    f = safetensors(tmp_path / "m.safetensors", {"a": 4096, "b": 8192})
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - cut] if cut > 0 else data[:20])
    problem = safetensors_problem(f)
    assert problem is not None and problem.startswith(words)


def test_random_bytes_are_not_a_safetensors_file(tmp_path, make_blob):
    blob = make_blob(64 << 10)
    problem = safetensors_problem(blob.path)
    assert problem is not None and "safetensors" in problem


# --- downloads without a sha256 ------------------------------------------------------------------------------
def test_a_truncated_safetensors_without_sha256_is_never_placed(settings, cdn, tmp_path):
    whole = safetensors(tmp_path / "whole.safetensors", {"w": 1 << 20})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[: -(64 << 10)])  # what a server cut mid-way leaves
    cdn.add_file("/m.safetensors", cut)
    settings = settings.with_(max_attempts=2)
    dest = settings.models_dir / "loras/model.safetensors"
    [row] = fetch([spec(cdn.url + "/m.safetensors")], settings)
    assert row.state == "failed" and "truncated safetensors file" in row.error and "gave up after 2 attempts" in row.error
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()
    # The whole file, once the server has it, is placed, and says what it was checked against.
    cdn.replace_content("/m.safetensors", whole)
    [row] = fetch([spec(cdn.url + "/m.safetensors")], settings)
    assert row.state == "done" and row.verified is False and dest.read_bytes() == whole.read_bytes()
    assert last_event(settings) == "done: size and safetensors header checked (no sha256 known): unverified"


def test_a_file_with_a_size_only_says_size_checked_only(settings, cdn, make_blob):
    blob = make_blob(1 << 20)
    cdn.add_file("/m.bin", blob.path)
    [row] = fetch([spec(cdn.url + "/m.bin", "loras/model.bin")], settings)
    assert row.state == "done" and row.verified is False and row.size == blob.size
    assert last_event(settings) == "done: size checked only (no sha256 known): unverified"


def _finish(settings, store: Store, path: Path, size: int | None, sha256: str | None) -> str:
    """Run the verdict on a finished hash of `path` (a download of unknown size) and return the row's last event."""
    store.upsert("model", source="https://example.invalid/f", dest=f"loras/{path.name}")
    store.transition("model", DownloadState.VERIFYING, "downloaded: verifying")
    dest = settings.models_dir / "loras" / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    task = HashTask(path)
    task._thread.join()
    assert finish(store, Job("model", dest, path, "download", size, sha256), task) == SETTLED
    assert dest.exists()
    return store.events("model", limit=1)[0].message


def test_a_file_with_neither_sha256_nor_size_says_so(settings, tmp_path, make_blob):
    blob = make_blob(4096)
    with Store(settings.db_path) as store:
        assert _finish(settings, store, blob.path, None, None) == "done: no sha256 or size known: unverified"


def test_a_safetensors_with_neither_sha256_nor_size_is_still_structure_checked(settings, tmp_path):
    f = safetensors(tmp_path / "x.safetensors", {"w": 4096})
    with Store(settings.db_path) as store:
        message = _finish(settings, store, f, None, None)
    assert message == "done: safetensors header checked (no sha256 or size known): unverified"


def test_a_part_without_its_control_file_and_no_sha256_starts_over(settings, cdn, make_blob):
    blob = make_blob(2 << 20)
    cdn.add_file("/m.bin", blob.path)
    dest = settings.models_dir / "loras/model.bin"
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True)
    # A part of the full length whose .aria2 was lost: the stretches aria2 had not written yet are holes (zeros).
    with open(part, "wb") as fh:
        fh.write(blob.data[: 1 << 20])
        fh.truncate(blob.size)
    [row] = fetch([spec(cdn.url + "/m.bin", "loras/model.bin")], settings)
    assert row.state == "done" and dest.read_bytes() == blob.data, "the holes were never placed"
    with Store(settings.db_path) as store:
        assert any("lost its control file" in e.message and "starts over" in e.message for e in store.events("model"))
