"""Where a resume starts: the finished pieces aria2's control file records, not the part file's length (several
connections write into the part at once, so it runs ahead). The format is aria2's technical notes' "Control File
(*.aria2) Format"; the last test reads a control file aria2 itself wrote."""

from __future__ import annotations

import struct

import pytest

from downloader.files import control_path, resumable_bytes
from downloader.manager import Manager
from downloader.plan import build_plan
from downloader.state import Store
from tests.test_fetch import run_until, spec


def bitfield(count: int, done: list[int]) -> bytes:
    bits = bytearray((count + 7) // 8)
    for i in done:
        bits[i // 8] |= 0x80 >> (i % 8)
    return bytes(bits)


def control_file(piece: int, total: int, done: list[int], *, version: int = 1, info_hash: bytes = b"",
                 in_flight: tuple[tuple[int, int, list[int]], ...] = ()) -> bytes:
    """A control file as aria2 writes it: version, extension, info hash, piece length, total, upload, bitfield,
    then the pieces in flight (index, length, the bitfield of their 16 KiB blocks)."""
    order = ">" if version == 1 else "<"
    bits = bitfield(-(-total // piece), done)
    head = struct.pack(">H", version) + struct.pack(f"{order}II", 0, len(info_hash)) + info_hash
    out = head + struct.pack(f"{order}IQQI", piece, total, 0, len(bits)) + bits + struct.pack(f"{order}I", len(in_flight))
    for index, length, blocks in in_flight:
        field = bitfield(-(-length // (16 * 1024)), blocks)
        out += struct.pack(f"{order}III", index, length, len(field)) + field
    return out


@pytest.mark.parametrize(
    ("piece", "total", "done", "expected"),
    [
        (1 << 20, 10 << 20, [0, 1, 2], 3 << 20),  # a prefix
        (1 << 20, 10 << 20, [0, 5, 6], 3 << 20),  # connections far ahead of the prefix
        (1 << 20, (5 << 20) + 123, [5], 123),  # only the short last piece
        (1 << 20, (5 << 20) + 123, [0, 1, 2, 3, 4, 5], (5 << 20) + 123),  # all of it
        (1 << 20, 9 << 20, [], 0),
    ],
)
def test_the_resume_point_counts_finished_pieces(tmp_path, piece, total, done, expected):
    part = tmp_path / "m.safetensors.part"
    part.write_bytes(b"\0" * 100)  # its length says nothing here
    control_path(part).write_bytes(control_file(piece, total, done))
    assert resumable_bytes(part) == expected


def test_blocks_of_pieces_in_flight_count(tmp_path):
    part = tmp_path / "m.part"
    part.write_bytes(b"")
    # piece 0 done; piece 3 in flight with 45 of its 64 blocks; the short last piece (1000 bytes) with its one block
    control = control_file(1 << 20, (4 << 20) + 1000, [0], in_flight=((3, 1 << 20, list(range(45))), (4, 1000, [0])))
    control_path(part).write_bytes(control)
    assert resumable_bytes(part) == (1 << 20) + 45 * 16 * 1024 + 1000


def test_an_info_hash_is_skipped_and_version_0_is_little_endian(tmp_path):
    part = tmp_path / "m.part"
    part.write_bytes(b"")
    control_path(part).write_bytes(control_file(1 << 20, 4 << 20, [0, 1], version=0, info_hash=b"x" * 20))
    assert resumable_bytes(part) == 2 << 20


@pytest.mark.parametrize("control", [None, b"", b"\x00\x01garbage", control_file(1 << 20, 4 << 20, [0])[:20]])
def test_without_a_readable_control_file_the_parts_length_counts(tmp_path, control):
    part = tmp_path / "m.part"
    part.write_bytes(b"x" * 4096)
    if control is not None:
        control_path(part).write_bytes(control)
    assert resumable_bytes(part) == 4096


def test_a_control_file_aria2_wrote_gives_what_aria2_reported_done(settings, make_blob):
    from tests.servers import FileServer

    blob = make_blob(12 << 20)
    with FileServer(rate_limit=1_500_000) as cdn:
        cdn.add_file("/m.bin", blob.path)
        s = spec(cdn.url + "/m.bin", sha256=blob.sha256)
        settings = settings.with_(min_split_size="1M")
        with Store(settings.db_path) as store, Manager(settings, store) as manager:
            ids = manager.submit(build_plan([s], settings, store))
            [paused] = run_until(manager, ids, store, lambda st: st.get("model").bytes_done > 2 << 20)
    part = settings.models_dir / "loras/model.safetensors.part"
    kept = resumable_bytes(part)
    assert 0 < kept <= part.stat().st_size
    # aria2's own count when it stopped is the finished pieces plus what was in flight.
    assert kept <= paused.bytes_done
    assert kept % (16 * 1024) == 0, "whole 16 KiB blocks"
