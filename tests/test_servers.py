"""Tests of the loopback CDN and Hub stand-ins, driven by real clients only."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import huggingface_hub
import pytest
from huggingface_hub.errors import (
    GatedRepoError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.servers import FakeHub, FileServer

ARIA2C = shutil.which("aria2c")


@pytest.fixture
def payload() -> bytes:
    return os.urandom(1_000_003)  # odd size so range arithmetic is exercised


@pytest.fixture
def server(tmp_path: Path, payload: bytes) -> Iterator[FileServer]:
    src = tmp_path / "a.bin"
    src.write_bytes(payload)
    with FileServer() as srv:
        srv.add_file("/files/a.bin", src)
        srv.add_bytes("/small.txt", b"0123456789")
        yield srv


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """GET with urllib; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), e.read()


def _conn(srv: FileServer, timeout: float = 10) -> http.client.HTTPConnection:
    host = urlsplit(srv.url)
    assert host.hostname is not None and host.port is not None
    return http.client.HTTPConnection(host.hostname, host.port, timeout=timeout)


# --- FileServer: HTTP semantics -------------------------------------------------


def test_full_get_and_validators(server: FileServer, payload: bytes) -> None:
    status, headers, body = _get(server.url + "/files/a.bin")
    assert status == 200
    assert body == payload
    assert headers["Content-Length"] == str(len(payload))
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["ETag"].startswith('"')
    assert "GMT" in headers["Last-Modified"]


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [("bytes=10-99", 10, 99), ("bytes=999990-", 999990, 1_000_002), ("bytes=-5", 999_998, 1_000_002),
     ("bytes=1000000-2000000", 1_000_000, 1_000_002)],
)
def test_single_ranges(server: FileServer, payload: bytes, spec: str, start: int, end: int) -> None:
    status, headers, body = _get(server.url + "/files/a.bin", {"Range": spec})
    assert status == 206
    assert body == payload[start : end + 1]
    assert headers["Content-Range"] == f"bytes {start}-{end}/{len(payload)}"
    assert headers["Content-Length"] == str(end - start + 1)


@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_ranges_match_slicing(data: st.DataObject) -> None:
    blob = bytes(range(256)) * 4
    with FileServer() as srv:
        srv.add_bytes("/b", blob)
        start = data.draw(st.integers(0, len(blob) - 1))
        end = data.draw(st.integers(start, len(blob) + 50))
        status, headers, body = _get(srv.url + "/b", {"Range": f"bytes={start}-{end}"})
    assert status == 206
    assert body == blob[start : end + 1]
    assert headers["Content-Range"] == f"bytes {start}-{min(end, len(blob) - 1)}/{len(blob)}"


def test_unsatisfiable_range_is_416(server: FileServer, payload: bytes) -> None:
    status, headers, _ = _get(server.url + "/files/a.bin", {"Range": f"bytes={len(payload)}-"})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(payload)}"


def test_head_and_unknown_path(server: FileServer, payload: bytes) -> None:
    conn = _conn(server)
    conn.request("HEAD", "/files/a.bin")
    r = conn.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Length") == str(len(payload))
    assert r.read() == b""
    # Same connection is reused (keep-alive) for the 404.
    conn.request("GET", "/nope")
    r = conn.getresponse()
    assert r.status == 404
    r.read()
    conn.close()
    recs = server.requests
    assert [(x.method, x.status) for x in recs] == [("HEAD", 200), ("GET", 404)]
    assert recs[0].client_port == recs[1].client_port
    assert server.bytes_sent("/files/a.bin") == 0


def test_bytes_sent_accounting_and_reset(server: FileServer, payload: bytes) -> None:
    _get(server.url + "/files/a.bin", {"Range": "bytes=0-999"})
    _get(server.url + "/small.txt")
    assert server.bytes_sent("/files/a.bin") == 1000
    assert server.bytes_sent("/small.txt") == 10
    assert server.bytes_sent() == 1010
    rec = server.requests[0]
    assert (rec.path, rec.range, rec.status, rec.bytes_sent) == ("/files/a.bin", "bytes=0-999", 206, 1000)
    assert rec.headers["range"] == "bytes=0-999"
    server.reset_stats()
    assert server.bytes_sent() == 0
    assert server.requests == []


def test_replace_content(server: FileServer) -> None:
    _, h1, _ = _get(server.url + "/small.txt")
    server.replace_content("/small.txt", b"corrupted!", keep_etag=True)
    _, h2, body = _get(server.url + "/small.txt")
    assert body == b"corrupted!"
    assert h2["ETag"] == h1["ETag"]  # silent corruption: validators unchanged
    server.replace_content("/small.txt", b"new version")
    _, h3, body = _get(server.url + "/small.txt")
    assert body == b"new version"
    assert h3["ETag"] != h1["ETag"]


# --- FileServer: fault injection ----------------------------------------------------


def test_fail_next_count_and_path_filter(server: FileServer, payload: bytes) -> None:
    server.fail_next(2, status=503, path="/files/a.bin")
    assert _get(server.url + "/small.txt")[0] == 200  # other path not affected
    assert _get(server.url + "/files/a.bin")[0] == 503
    assert _get(server.url + "/files/a.bin")[0] == 503
    status, _, body = _get(server.url + "/files/a.bin")
    assert status == 200 and body == payload
    assert [r.fault for r in server.requests] == [None, "fail", "fail", None]


def test_drop_next_gives_incomplete_read(server: FileServer, payload: bytes) -> None:
    server.drop_next(1, after_bytes=123_456)
    conn = _conn(server)
    conn.request("GET", "/files/a.bin")
    r = conn.getresponse()
    assert r.status == 200
    with pytest.raises(http.client.IncompleteRead) as info:
        r.read()
    assert info.value.partial == payload[:123_456]
    conn.close()
    assert server.bytes_sent("/files/a.bin") == 123_456
    assert server.requests[0].fault == "drop"
    # Only one drop was requested: the next GET is whole.
    assert _get(server.url + "/files/a.bin")[2] == payload


def test_stall_next_sends_first_chunk_then_nothing(server: FileServer, payload: bytes) -> None:
    server.stall_next(1, seconds=1.0, after_bytes=1000)
    conn = _conn(server, timeout=0.3)
    conn.request("GET", "/files/a.bin")
    r = conn.getresponse()
    assert r.read(1000) == payload[:1000]
    with pytest.raises(TimeoutError):
        r.read(1)  # nothing more arrives within the client timeout
    conn.close()
    # A client that waits sees the connection closed once the stall ends.
    server.stall_next(1, seconds=1.0, after_bytes=1000)
    conn = _conn(server, timeout=5)
    conn.request("GET", "/files/a.bin")
    r = conn.getresponse()
    t0 = time.monotonic()
    with pytest.raises(http.client.IncompleteRead) as info:
        r.read()
    assert len(info.value.partial) == 1000
    assert time.monotonic() - t0 >= 0.7, "the connection stayed open for the stall"  # and closed before the 5 s timeout
    conn.close()


def test_require_bearer(server: FileServer) -> None:
    server.require_bearer("s3cret")
    assert _get(server.url + "/small.txt")[0] == 401
    assert _get(server.url + "/small.txt", {"Authorization": "Bearer wrong"})[0] == 401
    assert _get(server.url + "/small.txt", {"Authorization": "Bearer s3cret"})[2] == b"0123456789"
    server.require_bearer(None)
    assert _get(server.url + "/small.txt")[0] == 200


def test_signed_urls_and_expiry(tmp_path: Path) -> None:
    with FileServer(sign_required=True) as srv:
        now = [1_700_000_000.25]
        srv.clock = lambda: now[0]  # the server's wall clock, moved by the test instead of waited for
        srv.add_bytes("/obj", b"payload")
        status, _, body = _get(srv.url + "/obj")
        assert (status, body) == (403, b"Request has expired")
        good = srv.signed_url("/obj", ttl=1)
        assert _get(good)[2] == b"payload"
        tampered = good[:-1] + ("0" if good[-1] != "0" else "1")
        assert _get(tampered)[0] == 403
        long_lived = srv.signed_url("/obj", ttl=60)
        now[0] += 1.0
        assert _get(good)[2] == b"payload", "valid for at least its ttl"
        now[0] += 1.1
        status, _, body = _get(good)
        assert (status, body) == (403, b"Request has expired")
        assert _get(long_lived)[2] == b"payload"


def test_rate_limit_is_per_connection(tmp_path: Path) -> None:
    size = 4_000_000
    src = tmp_path / "r.bin"
    src.write_bytes(os.urandom(size))
    with FileServer(rate_limit=2_000_000) as srv:
        srv.add_file("/r", src)
        durations: list[float] = []
        bodies: list[bytes] = []

        def fetch() -> None:
            t0 = time.monotonic()
            bodies.append(_get(srv.url + "/r")[2])
            durations.append(time.monotonic() - t0)

        fetch()
        alone = durations.pop()
        threads = [threading.Thread(target=fetch) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(b == src.read_bytes() for b in bodies) and len(bodies) == 3
    # Each connection is capped at 2 MB/s: 4 MB takes at least ~2 s...
    assert min(alone, *durations) >= 1.8
    # ...but the cap is per connection: two at once each take about as long as one alone (a shared cap would
    # double it). A ratio within one run, so a busy machine slows both sides alike.
    assert max(durations) < 1.5 * alone, (alone, durations)


def test_stop_is_prompt_with_open_and_sleeping_connections(tmp_path: Path) -> None:
    srv = FileServer(rate_limit=100_000)
    srv.start()
    srv.add_bytes("/slow", b"x" * 5_000_000)
    srv.add_bytes("/stall", b"y" * 100_000)
    srv.stall_next(1, seconds=60, path="/stall", after_bytes=10)
    idle = _conn(srv)
    idle.request("GET", "/nope")
    idle.getresponse().read()  # keep-alive connection now idle on the server
    slow, stalled = _conn(srv), _conn(srv)
    slow.request("GET", "/slow")
    slow_resp = slow.getresponse()
    slow_resp.read(1000)
    stalled.request("GET", "/stall")
    stalled.getresponse().read(10)
    stopper = threading.Thread(target=srv.stop)
    stopper.start()
    stopper.join(30)  # half the stall: a stop that waited for the sleeping connection would still be running
    assert not stopper.is_alive(), "stop() waited for a stalled connection"
    with pytest.raises(http.client.IncompleteRead):
        slow_resp.read()
    for c in (idle, slow, stalled):
        c.close()


# --- aria2c ------------------------------------------------------------------------------


def _aria2c(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert ARIA2C is not None
    cmd = [
        ARIA2C, "--no-conf", "-x", "8", "-s", "8", "--min-split-size=1M", "-d", str(out.parent), "-o", out.name,
        "--file-allocation=none", "--allow-overwrite=true", "--auto-file-renaming=false",
        "--console-log-level=warn", "--summary-interval=0", "--retry-wait=0", "--max-tries=5", *extra, url,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(ARIA2C is None, reason="aria2c not installed")
def test_aria2c_segmented_download_is_identical(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(20 * 1024 * 1024 + 17))
    with FileServer() as srv:
        srv.add_file("/big.bin", src)
        out = tmp_path / "out" / "big.bin"
        out.parent.mkdir()
        proc = _aria2c(srv.url + "/big.bin", out)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert out.read_bytes() == src.read_bytes()
        assert srv.wait_idle()
        recs = [r for r in srv.requests if r.path == "/big.bin"]
        # aria2 really split the download over several connections with ranges.
        assert len({r.client_port for r in recs}) >= 4
        assert sum(1 for r in recs if r.range is not None) >= 4
        assert srv.bytes_sent("/big.bin") >= src.stat().st_size


@pytest.mark.skipif(ARIA2C is None, reason="aria2c not installed")
def test_aria2c_recovers_from_dropped_connections(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(8 * 1024 * 1024))
    with FileServer() as srv:
        srv.add_file("/big.bin", src)
        srv.drop_next(3, after_bytes=100_000)
        out = tmp_path / "out.bin"
        proc = _aria2c(srv.url + "/big.bin", out)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert out.read_bytes() == src.read_bytes()
        assert srv.wait_idle()
        assert sum(1 for r in srv.requests if r.fault == "drop") == 3


@pytest.mark.skipif(ARIA2C is None, reason="aria2c not installed")
def test_aria2c_expired_signed_url_is_error_22(tmp_path: Path) -> None:
    with FileServer(sign_required=True) as srv:
        srv.add_bytes("/x", b"z" * 1000)
        proc = _aria2c(srv.url + "/x?expires=1&sig=00", tmp_path / "x")
        assert proc.returncode == 22, proc.stdout + proc.stderr


# --- FakeHub through the real huggingface_hub ------------------------------------------


@pytest.fixture
def hub_file(tmp_path: Path) -> Path:
    src = tmp_path / "model.safetensors"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    return src


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        yield h


def test_hub_metadata(hub: FakeHub, hub_file: Path) -> None:
    info = hub.add_file("org/model", "weights/model.safetensors", hub_file)
    sha = hashlib.sha256(hub_file.read_bytes()).hexdigest()
    assert info.sha256 == sha and info.commit == FakeHub.default_commit("org/model")
    for revision in ("main", info.commit):
        url = huggingface_hub.hf_hub_url("org/model", "weights/model.safetensors", revision=revision, endpoint=hub.url)
        meta = huggingface_hub.get_hf_file_metadata(url, token=False)
        assert meta.size == hub_file.stat().st_size
        assert meta.etag == sha
        assert meta.commit_hash == info.commit
        assert meta.xet_file_data is None
        assert meta.location.startswith(hub.cdn.url + "/")
        # The CDN only honours the signed form of that location.
        assert _get(meta.location.split("?")[0])[0] == 403
        assert _get(meta.location, {"Range": "bytes=0-9"})[2] == hub_file.read_bytes()[:10]


def test_hub_download_local_dir_and_cache_dir(hub: FakeHub, hub_file: Path, tmp_path: Path) -> None:
    info = hub.add_file("org/model", "model.safetensors", hub_file)
    path = huggingface_hub.hf_hub_download(
        "org/model", "model.safetensors", revision="main", local_dir=tmp_path / "ld", endpoint=hub.url, token=False
    )
    assert Path(path).read_bytes() == hub_file.read_bytes()
    path = huggingface_hub.hf_hub_download(
        "org/model", "model.safetensors", revision=info.commit, cache_dir=tmp_path / "c", endpoint=hub.url, token=False
    )
    assert Path(path).read_bytes() == hub_file.read_bytes()
    assert info.commit in path
    assert [r.method for r in hub.requests] == ["HEAD", "HEAD"]
    cdn_gets = [r for r in hub.cdn.requests if r.method == "GET"]
    assert len(cdn_gets) == 2 and all(r.status == 200 for r in cdn_gets)
    assert hub.cdn.bytes_sent() == 2 * hub_file.stat().st_size


def test_hub_gated_repo(hub: FakeHub, hub_file: Path, tmp_path: Path) -> None:
    hub.add_file("org/gated", "model.safetensors", hub_file)
    hub.gate("org/gated", "hf_good")
    url = huggingface_hub.hf_hub_url("org/gated", "model.safetensors", endpoint=hub.url)
    with pytest.raises(GatedRepoError) as no_token:
        huggingface_hub.get_hf_file_metadata(url, token=False)
    assert no_token.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as bad_token:
        huggingface_hub.hf_hub_download(
            "org/gated", "model.safetensors", local_dir=tmp_path / "a", endpoint=hub.url, token="hf_bad"
        )
    assert bad_token.value.response.status_code == 403
    path = huggingface_hub.hf_hub_download(
        "org/gated", "model.safetensors", local_dir=tmp_path / "b", endpoint=hub.url, token="hf_good"
    )
    assert Path(path).read_bytes() == hub_file.read_bytes()
    assert hub.requests[-1].headers["authorization"] == "Bearer hf_good"
    # The token stays on the hub: the library does not forward it to the CDN.
    assert all("authorization" not in r.headers for r in hub.cdn.requests)


def test_hub_not_found_errors(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_file("org/model", "a.bin", b"abc")

    def dl(repo: str, name: str, rev: str = "main") -> str:
        return huggingface_hub.hf_hub_download(
            repo, name, revision=rev, local_dir=tmp_path, endpoint=hub.url, token=False
        )

    with pytest.raises(RemoteEntryNotFoundError):
        dl("org/model", "missing.bin")
    with pytest.raises(RevisionNotFoundError):
        dl("org/model", "a.bin", "nope")
    with pytest.raises(RepositoryNotFoundError):
        dl("org/other", "a.bin")
    assert Path(dl("org/model", "a.bin")).read_bytes() == b"abc"


def test_hub_wrong_sha256_is_reported_as_is(hub: FakeHub, hub_file: Path) -> None:
    fake = "0" * 64
    hub.add_file("org/model", "m.bin", hub_file, sha256=fake)
    meta = huggingface_hub.get_hf_file_metadata(
        huggingface_hub.hf_hub_url("org/model", "m.bin", endpoint=hub.url), token=False
    )
    assert meta.etag == fake
    assert hashlib.sha256(_get(meta.location)[2]).hexdigest() != fake


def test_hub_fail_next_is_retried_by_hf_hub_download(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_file("org/model", "a.bin", b"abc" * 1000)
    hub.fail_next(1, status=503)
    path = huggingface_hub.hf_hub_download("org/model", "a.bin", local_dir=tmp_path, endpoint=hub.url, token=False)
    assert Path(path).read_bytes() == b"abc" * 1000
    assert [(r.status, r.fault) for r in hub.requests] == [(503, "fail"), (302, None)]


def test_hub_non_lfs_file_and_snapshot(hub: FakeHub, hub_file: Path, tmp_path: Path) -> None:
    hub.add_file("org/model", "config.json", b'{"a": 1}', lfs=False)
    hub.add_file("org/model", "sub/dir/w.bin", hub_file)
    meta = huggingface_hub.get_hf_file_metadata(
        huggingface_hub.hf_hub_url("org/model", "config.json", endpoint=hub.url), token=False
    )
    assert meta.size == 8 and meta.etag == hashlib.sha1(b'blob 8\0{"a": 1}').hexdigest()
    folder = huggingface_hub.snapshot_download("org/model", local_dir=tmp_path / "snap", endpoint=hub.url, token=False)
    assert (Path(folder) / "config.json").read_bytes() == b'{"a": 1}'
    assert (Path(folder) / "sub/dir/w.bin").read_bytes() == hub_file.read_bytes()


def test_use_as_endpoint(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_file("org/model", "a.bin", b"hello")
    before = huggingface_hub.constants.ENDPOINT
    with hub.use_as_endpoint():
        assert os.environ["HF_ENDPOINT"] == hub.url
        path = huggingface_hub.hf_hub_download("org/model", "a.bin", local_dir=tmp_path, token=False)
    assert Path(path).read_bytes() == b"hello"
    assert huggingface_hub.constants.ENDPOINT == before
