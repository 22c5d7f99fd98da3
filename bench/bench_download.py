#!/usr/bin/env python3
"""Download benchmark: this project vs raw aria2c vs huggingface_hub.hf_hub_download, on loopback.

One run, one generated file (random bytes, in a temp dir on the same disk, deleted at the end), served by
`tests.servers.FakeHub` (hub `/resolve/` -> 302 -> signed URL on a CDN that caps every connection at
`--rate` bytes/s, as a real CDN does). Sections:

1. Throughput: median of `--repeat` rounds; each round runs every contender once, the order rotating, so
   machine noise hits all alike. Contenders: raw aria2c with the project's own aria2 options, raw aria2c +
   sha256sum, this project's `downloader.fetch.fetch()` end to end, `hf_hub_download`, sha256sum alone.
2. Resume after kill -9 at 50%: the project's CLI, hf_hub_download, `wget -c`; bytes the CDN sent in total
   minus the file size = bytes fetched again.
3. With `--tune`: the project's aria2 options varied (stream-piece-selector, min-split-size, poll interval)
   by patching `Aria2Daemon._options` inside the benchmark's own worker processes, never the product files.

The project and hf_hub_download run in worker processes (this script with `--worker`), so the loopback
servers in this process never share a GIL with a contender. Results go to `--out` (docs/BENCHMARKS.md):
only this benchmark's sections are replaced; other sections of the file are kept.

    .venv/bin/python bench/bench_download.py            # full: 1 GiB, 3 rounds (~10 min)
    .venv/bin/python bench/bench_download.py --quick    # smoke: 128 MiB, 1 round
    .venv/bin/python bench/bench_download.py --tune     # also the tuning matrix
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

REPO_ID = "bench/model"
FILENAME = "model.safetensors"
DEST = "bench/model.safetensors"
ARIA2C = shutil.which("aria2c") or "/usr/bin/aria2c"
MB = 1e6
MiB = 1 << 20

LOAD_START = "/".join(f"{x:.2f}" for x in os.getloadavg())
SECTION_DOWNLOAD = "## Download: this project vs aria2c vs hf_hub_download"
SECTION_RESUME = "## Resume after kill -9"
SECTION_TUNING = "## Tuning notes"

# aria2 options of the project that only make sense for the RPC daemon (the raw CLI run leaves them out).
DAEMON_ONLY = {
    "enable-rpc",
    "rpc-listen-all",
    "rpc-listen-port",
    "rpc-secret",
    "rpc-allow-origin-all",
    "stop-with-process",
    "max-concurrent-downloads",
    "dir",
}


# ----------------------------------------------------------------------------------------------------
# Worker side: runs in a child process (this file with --worker JSON) and prints one JSON line.
# ----------------------------------------------------------------------------------------------------
def _utc_ts(at: dt.datetime) -> float:
    return at.replace(tzinfo=dt.timezone.utc).timestamp()


def worker_fetch(p: dict[str, Any]) -> dict[str, Any]:
    """downloader.fetch.fetch() end to end, instrumented from the outside (patches live in this process only)."""
    import downloader.aria2 as aria2_mod
    import downloader.manager as manager_mod
    from downloader.config import Settings
    from downloader.fetch import fetch
    from downloader.manifest import ModelSpec
    from downloader.state import Store

    extra: dict[str, str] = p.get("aria2_extra") or {}
    if extra:
        original_options = aria2_mod.Aria2Daemon._options

        def _options(self: Any, port: int, secret: str) -> dict[str, str]:
            options = original_options(self, port, secret)
            options.update(extra)
            return options

        aria2_mod.Aria2Daemon._options = _options  # type: ignore[method-assign]

    rec: dict[str, Any] = {}

    class RecordingHashTask(manager_mod.HashTask):
        """Notes when the Manager saw aria2 finish and how much the prefix hasher still had to read."""

        def __init__(self, path: Path, hasher: Any = None, size: int = 0, **kwargs: Any) -> None:
            if hasher is not None:
                rec["complete_seen"] = time.time()
                rec["left_to_hash"] = max(size - hasher.hashed, 0)
            else:
                rec["full_pass"] = True  # a second whole-file read (checksum mismatch path, or no hasher)
            super().__init__(path, hasher, size, **kwargs)

    manager_mod.HashTask = RecordingHashTask  # type: ignore[misc]
    original_place = manager_mod.place

    def timed_place(part: Path, dest: Path) -> None:
        rec["place_start"] = time.time()
        original_place(part, dest)
        rec["place_end"] = time.time()

    manager_mod.place = timed_place  # type: ignore[assignment]

    ws = Path(p["workspace"])
    settings = Settings(
        workspace=ws,
        models_dir=ws / "models",
        state_dir=ws / ".downloader",
        manifest_dirs=(),
        hf_endpoint=p["hub_url"],
        aria2c=ARIA2C,
        connections=p["connections"],
        min_split_size=p["min_split"],
        poll_interval=p.get("poll_interval", Settings.poll_interval),
    )
    spec = ModelSpec(id="bench", source=f"hf://{REPO_ID}/{FILENAME}", dest=DEST)
    t0_wall = time.time()
    t0 = time.perf_counter()
    rows = fetch([spec], settings)
    elapsed = time.perf_counter() - t0
    t_end = time.time()
    row = rows[0]
    dest = settings.models_dir / DEST
    out: dict[str, Any] = {
        "elapsed": elapsed,
        "state": row.state,
        "verified": bool(row.verified),
        "error": row.error,
        "size": dest.stat().st_size if dest.exists() else None,
        **rec,
    }
    if dest.exists():
        # disk-cache=0: aria2 writes every byte straight to the file, and neither the hash nor the rename
        # touches mtime, so mtime is the moment aria2 wrote its last byte.
        last_byte = dest.stat().st_mtime_ns / 1e9
        out["last_byte"] = last_byte
        if "place_end" in rec:
            out["tail"] = rec["place_end"] - last_byte  # last byte -> file verified and in place
        out["return_tail"] = t_end - last_byte  # last byte -> fetch() returned (aria2c stopped)
    if "place_end" in rec:
        out["in_place_s"] = rec["place_end"] - t0_wall  # start -> file verified and in place
    with Store(settings.db_path) as store:
        events = [(e.message, _utc_ts(e.at)) for e in reversed(store.events("bench", limit=50))]
    out["events"] = [(m, round(t - t0_wall, 4)) for m, t in events]
    started = [t for m, t in events if m.startswith("downloading")]
    if started and "last_byte" in out:
        out["download_s"] = out["last_byte"] - started[0]  # aria2 add -> last byte
        out["startup_s"] = started[0] - t0_wall  # resolve + aria2 start + plan
    if "last_byte" in out and "complete_seen" in out:
        out["detect_s"] = rec["complete_seen"] - out["last_byte"]  # poll latency + removing the gid
        out["hash_rest_s"] = rec["place_start"] - rec["complete_seen"]
        out["place_s"] = rec["place_end"] - rec["place_start"]
        out["after_place_s"] = t_end - rec["place_end"]
    return out


def worker_hf(p: dict[str, Any]) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download

    t0 = time.perf_counter()
    path = hf_hub_download(REPO_ID, FILENAME, local_dir=p["local_dir"], endpoint=p["hub_url"], token=False)
    elapsed = time.perf_counter() - t0
    return {"elapsed": elapsed, "path": path, "size": os.path.getsize(path)}


def run_worker(arg: str) -> None:
    p = json.loads(arg)
    kind = p["kind"]
    out = worker_fetch(p) if kind == "fetch" else worker_hf(p)
    print("RESULT " + json.dumps(out), flush=True)


# ----------------------------------------------------------------------------------------------------
# Orchestrator side
# ----------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Env:
    args: argparse.Namespace
    tmp: Path
    blob: Path
    size: int
    sha256: str
    hub: Any
    cdn: Any
    cdn_path: str
    resolve_url: str
    log: Any
    run_no: int = 0

    def scratch(self, name: str) -> Path:
        self.run_no += 1
        d = self.tmp / f"run-{self.run_no:03d}-{name}"
        d.mkdir()
        return d


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def worker_cmd(params: dict[str, Any]) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(params)]


def worker_env(hub_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DOWNLOADER_", "ARIA2"))}
    env.update(
        HF_ENDPOINT=hub_url,
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(REPO),
    )
    return env


def parse_result(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"worker printed no result:\n{stdout[-3000:]}")


def run_worker_proc(e: Env, params: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    res = subprocess.run(
        worker_cmd(params),
        env=worker_env(e.hub.url),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"worker {params['kind']} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return parse_result(res.stdout)


def settle(e: Env) -> None:
    """Between runs, outside every timer: let the servers go idle and flush dirty pages of earlier runs."""
    e.cdn.wait_idle(10)
    e.hub.wait_idle(10)
    os.sync()
    time.sleep(0.3)


PRODUCT: dict[str, Any] = {}  # the product's defaults in force for the run (set at start, or from a results file)


def product_defaults() -> dict[str, Any]:
    """What the project gives aria2 and its loop today, read from the code (not assumed)."""
    from downloader.aria2 import Aria2Daemon
    from downloader.config import Settings

    here = Path(tempfile.gettempdir())
    options = Aria2Daemon(Settings(workspace=here, models_dir=here, state_dir=here, manifest_dirs=()))._options(0, "")
    return {
        "selector": options.get("stream-piece-selector", "default"),
        "min_split": Settings.min_split_size,
        "poll": Settings.poll_interval,
        "options": {k: v for k, v in options.items() if k not in DAEMON_ONLY and k not in ("log",)},
    }


def raw_aria2c_cmd(e: Env, directory: Path, out: str, extra: dict[str, str] | None = None) -> list[str]:
    """aria2c with exactly the options the project gives its daemon, less the RPC/daemon-only ones."""
    from downloader.aria2 import Aria2Daemon
    from downloader.config import Settings

    a = e.args
    settings = Settings(
        workspace=directory,
        models_dir=directory,
        state_dir=directory,
        manifest_dirs=(),
        aria2c=ARIA2C,
        connections=a.connections,
        min_split_size=a.min_split,
    )
    daemon = Aria2Daemon(settings)
    daemon.log_path = directory / "aria2.log"
    options = {k: v for k, v in daemon._options(0, "").items() if k not in DAEMON_ONLY}
    options.update(extra or {})
    return [ARIA2C, *(f"--{k}={v}" for k, v in options.items()), f"--dir={directory}", f"--out={out}", e.resolve_url]


def sha256sum(path: Path) -> str:
    res = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    return res.stdout.split()[0]


def sha256_py(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(8 * MiB)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


# --- section 1 contenders ------------------------------------------------------------------------------
def run_aria2c(e: Env, with_hash: bool, extra: dict[str, str] | None = None) -> dict[str, Any]:
    d = e.scratch("aria2c-sha" if with_hash else "aria2c")
    cmd = raw_aria2c_cmd(e, d, FILENAME, extra)
    e.cdn.reset_stats()
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    t_dl = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"aria2c failed ({res.returncode}): {res.stdout[-2000:]} {res.stderr[-2000:]}")
    out: dict[str, Any] = {"download_s": t_dl}
    if with_hash:
        digest = sha256sum(d / FILENAME)
        out["hash_s"] = time.perf_counter() - t0 - t_dl
        if digest != e.sha256:
            raise RuntimeError("aria2c + sha256sum: checksum mismatch")
    out["elapsed"] = time.perf_counter() - t0
    if (d / FILENAME).stat().st_size != e.size:
        raise RuntimeError("aria2c: wrong size")
    out["overfetch"] = served_beyond_size(e)
    shutil.rmtree(d)
    return out


def served_beyond_size(e: Env) -> int:
    """Bytes the CDN sent for the file beyond its size since the last reset (aria2 asks open-ended ranges and
    hangs up at a segment's end, so what was already in the socket buffers is sent for nothing)."""
    e.cdn.wait_idle(30)
    return e.cdn.bytes_sent(e.cdn_path) - e.size


def run_ours(e: Env, aria2_extra: dict[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    d = e.scratch("ours")
    params = {
        "kind": "fetch",
        "workspace": str(d),
        "hub_url": e.hub.url,
        "connections": e.args.connections,
        "min_split": e.args.min_split,
        "aria2_extra": aria2_extra or {},
        **overrides,
    }
    e.cdn.reset_stats()
    out = run_worker_proc(e, params)
    out["overfetch"] = served_beyond_size(e)
    if out["state"] != "done" or not out["verified"] or out["size"] != e.size:
        raise RuntimeError(f"project fetch did not end verified: {out}")
    shutil.rmtree(d)
    return out


def run_hf(e: Env) -> dict[str, Any]:
    d = e.scratch("hf")
    out = run_worker_proc(e, {"kind": "hf", "local_dir": str(d / "local"), "hub_url": e.hub.url})
    if out["size"] != e.size:
        raise RuntimeError("hf_hub_download: wrong size")
    shutil.rmtree(d)
    return out


def run_sha_only(e: Env) -> dict[str, Any]:
    t0 = time.perf_counter()
    digest = sha256sum(e.blob)
    out = {"elapsed": time.perf_counter() - t0}
    assert digest == e.sha256
    t0 = time.perf_counter()
    sha256_py(e.blob)
    out["hashlib_s"] = time.perf_counter() - t0
    return out


CONTENDERS = ["aria2c", "aria2c+sha256sum", "ours", "hf_hub_download", "sha256sum"]


def section_throughput(e: Env) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONTENDERS}
    fns = {
        "aria2c": lambda: run_aria2c(e, False),
        "aria2c+sha256sum": lambda: run_aria2c(e, True),
        "ours": lambda: run_ours(e),
        "hf_hub_download": lambda: run_hf(e),
        "sha256sum": lambda: run_sha_only(e),
    }
    for r in range(e.args.repeat):
        order = CONTENDERS[r % len(CONTENDERS) :] + CONTENDERS[: r % len(CONTENDERS)]
        for name in order:
            settle(e)
            out = fns[name]()
            out["round"] = r + 1
            runs[name].append(out)
            say(f"round {r + 1} {name}: {out['elapsed']:.2f} s ({e.size / out['elapsed'] / MB:.0f} MB/s)")
            print(json.dumps({"section": "throughput", "contender": name, **out}), file=e.log, flush=True)
    return runs


# --- section 2: kill -9 at 50% ----------------------------------------------------------------------------
def kill_at_half(e: Env, proc: subprocess.Popen[Any], before_kill: Any = None) -> tuple[float, int]:
    """Let `proc` download until the CDN sent half the file, (run `before_kill`), kill -9 its process group;
    returns the transfer rate at the kill and the bytes the CDN had sent."""
    try:
        run_rate = wait_half(e, proc)
        if before_kill is not None:
            before_kill()
    finally:
        kill_group(proc)
    e.cdn.wait_idle(30)
    return run_rate, e.cdn.bytes_sent(e.cdn_path)


def wait_half(e: Env, proc: subprocess.Popen[Any], timeout: float = 600) -> float:
    """Wait until the CDN has sent `--kill-at` of the file; returns the transfer rate seen so far (bytes/s,
    first byte to now): "one second of transfer" for this very run."""
    deadline = time.monotonic() + timeout
    target = int(e.size * e.args.kill_at)
    first_byte: float | None = None
    while (sent := e.cdn.bytes_sent(e.cdn_path)) < target:
        if first_byte is None and sent > 0:
            first_byte = time.monotonic()
        if proc.poll() is not None:
            raise RuntimeError(f"process ended (code {proc.returncode}) before {e.args.kill_at:.0%} was served")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {e.args.kill_at:.0%}")
        time.sleep(0.005)
    if first_byte is None:
        return float("nan")
    return sent / max(time.monotonic() - first_byte, 1e-3)


def kill_group(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def cli_env(e: Env, ws: Path) -> dict[str, str]:
    env = worker_env(e.hub.url)
    env.update(
        WORKSPACE=str(ws),
        MODELS_DIR=str(ws / "models"),
        DOWNLOADER_STATE=str(ws / ".downloader"),
        DOWNLOADER_MANIFESTS=str(ws / "no-shipped-manifests"),
        ARIA2C=ARIA2C,
        ARIA2_CONNECTIONS=str(e.args.connections),
        ARIA2_MIN_SPLIT_SIZE=e.args.min_split,
        COLUMNS="200",
    )
    return env


def resume_ours(e: Env) -> dict[str, Any]:
    ws = e.scratch("resume-ours")
    manifest = ws / "bench.yaml"
    manifest.write_text(
        textwrap.dedent(f"""\
            models:
              - id: bench
                source: hf://{REPO_ID}/{FILENAME}
                dest: {DEST}
            """)
    )
    cmd = [sys.executable, "-m", "downloader", "fetch", str(manifest)]
    env = cli_env(e, ws)
    e.cdn.reset_stats()
    with open(ws / "cli-1.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        killed: list[float] = []

        def kill_aria2_first() -> None:
            # aria2c first: it has stop-with-process=<cli pid> and would save its control file on the way out
            # if the CLI died first; a pod being killed gives it no such chance.
            owner = json.loads((ws / ".downloader" / "owner.lock").read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(owner["aria2_pid"]), signal.SIGKILL)
            killed.append(time.time())

        run_rate, first = kill_at_half(e, proc, kill_aria2_first)
        killed_at = killed[0] if killed else time.time()
    part = ws / "models" / (DEST + ".part")
    control = Path(str(part) + ".aria2")
    on_disk: dict[str, Any] = {"part_exists": part.exists(), "control_exists": control.exists()}
    if control.exists():
        on_disk["saved"] = control_file_saved_bytes(control)
        on_disk["control_age"] = killed_at - control.stat().st_mtime  # how stale the last save was at the kill
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=1800, check=False)
    second_s = time.perf_counter() - t0
    (ws / "cli-2.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise RuntimeError(f"CLI rerun failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    e.cdn.wait_idle(30)
    total = e.cdn.bytes_sent(e.cdn_path)
    dest = ws / "models" / DEST
    ok = dest.stat().st_size == e.size and sha256_py(dest) == e.sha256
    shutil.rmtree(ws)
    return {
        "first": first, "total": total, "refetched": total - e.size, "second_s": second_s, "ok": ok,
        "run_rate": run_rate, **on_disk,
    }


def control_file_saved_bytes(path: Path) -> int | None:
    """Bytes an aria2 control file records as downloaded: whole pieces of its bitfield plus the 16 KiB blocks
    of its in-flight pieces (format: aria2c(1), "Control File (*.aria2) Format", version 1, big endian)."""
    data = path.read_bytes()
    try:
        if int.from_bytes(data[0:2], "big") != 1:
            return None
        pos = 6
        hash_len = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4 + hash_len
        piece_len = int.from_bytes(data[pos : pos + 4], "big")
        total = int.from_bytes(data[pos + 4 : pos + 12], "big")
        pos += 4 + 8 + 8
        bf_len = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        bitfield = data[pos : pos + bf_len]
        pos += bf_len
        saved = sum(b.bit_count() for b in bitfield) * piece_len
        inflight = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        for _ in range(inflight):
            pos += 4  # index
            pos += 4  # length
            pbf_len = int.from_bytes(data[pos : pos + 4], "big")
            pos += 4
            saved += sum(b.bit_count() for b in data[pos : pos + pbf_len]) * 16 * 1024
            pos += pbf_len
        return min(saved, total)
    except (IndexError, ValueError):
        return None


def resume_hf(e: Env) -> dict[str, Any]:
    d = e.scratch("resume-hf")
    params = {"kind": "hf", "local_dir": str(d / "local"), "hub_url": e.hub.url}
    e.cdn.reset_stats()
    proc = subprocess.Popen(
        worker_cmd(params), env=worker_env(e.hub.url), cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    run_rate, first = kill_at_half(e, proc)
    t0 = time.perf_counter()
    out = run_worker_proc(e, params)
    second_s = time.perf_counter() - t0
    e.cdn.wait_idle(30)
    total = e.cdn.bytes_sent(e.cdn_path)
    dest = d / "local" / FILENAME
    ok = dest.stat().st_size == e.size and sha256_py(dest) == e.sha256
    leftovers = sum(p.stat().st_size for p in (d / "local").rglob("*.incomplete"))
    shutil.rmtree(d)
    return {
        "first": first, "total": total, "refetched": total - e.size, "second_s": second_s, "ok": ok,
        "run_rate": run_rate, "leftover_incomplete": leftovers, "elapsed_second_run": out["elapsed"],
    }


def resume_wget(e: Env) -> dict[str, Any]:
    d = e.scratch("resume-wget")
    out = d / FILENAME
    # wget follows the hub's 302 to the signed CDN URL on each run, like the other two.
    cmd = ["wget", "-q", "-c", "-O", str(out), e.resolve_url]
    e.cdn.reset_stats()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run_rate, first = kill_at_half(e, proc)
    have = out.stat().st_size
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    second_s = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"wget -c failed ({res.returncode}): {res.stderr[-2000:]}")
    e.cdn.wait_idle(30)
    total = e.cdn.bytes_sent(e.cdn_path)
    ok = out.stat().st_size == e.size and sha256_py(out) == e.sha256
    shutil.rmtree(d)
    return {
        "first": first, "total": total, "refetched": total - e.size, "second_s": second_s, "ok": ok, "had": have,
        "run_rate": run_rate,
    }


RESUMERS = ["ours", "hf_hub_download", "wget -c"]


def section_resume(e: Env) -> dict[str, list[dict[str, Any]]]:
    fns = {"ours": resume_ours, "hf_hub_download": resume_hf, "wget -c": resume_wget}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in RESUMERS}
    for r in range(e.args.resume_repeat):
        for name in [n for n in RESUMERS for _ in range(e.args.ours_resume_per_round if n == "ours" else 1)]:
            settle(e)
            out = fns[name](e)
            out["round"] = r + 1
            runs[name].append(out)
            extra = ""
            if out.get("saved") is not None:
                extra = f", control file: {out['saved'] / MB:.0f} MB saved, {out['control_age']:.2f} s old at the kill"
            say(
                f"resume round {r + 1} {name}: served {out['first'] / MB:.0f} MB before kill, "
                f"fetched again {out['refetched'] / MB:.1f} MB, ok={out['ok']}{extra}"
            )
            print(json.dumps({"section": "resume", "contender": name, **out}), file=e.log, flush=True)
    return runs


# --- section 3: tuning -------------------------------------------------------------------------------------
def _aria2_extra(selector: str, split: str) -> dict[str, str]:
    return {"min-split-size": split, "stream-piece-selector": "default" if selector == "none" else selector}


TuneResult = tuple[str, dict[str, str], dict[str, Any], list[dict[str, Any]]]


def _label(selector: str, split: str, poll: float | None) -> str:
    selector = "default" if selector == "none" else selector
    if poll is None:
        return f"raw aria2c (reference): selector={selector}, min-split={split}"
    return f"selector={selector}, min-split={split}, poll={poll:g} s"


def tuning_configs(args: argparse.Namespace) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """(label, aria2 options over the project's, worker overrides); {"raw": True} = raw aria2c reference."""
    poll = float(PRODUCT["poll"])
    wanted: list[tuple[str, str, float | None]] = []
    for selector in args.tune_selectors.split(","):
        for split in args.tune_splits.split(","):
            wanted.append((selector, split, poll))
    for spec in [x for x in args.tune_extra.split(",") if x]:
        selector, split, p = spec.split("/")
        wanted.append((selector, split, float(p)))
    today = (PRODUCT["selector"], PRODUCT["min_split"], poll)
    if _label(*today) not in {_label(*w) for w in wanted}:
        wanted.insert(0, today)  # the project as it is must be in the matrix
    for spec in [x for x in args.tune_raw.split(",") if x]:
        selector, split = spec.split("/")
        wanted.append((selector, split, None))
    configs: list[tuple[str, dict[str, str], dict[str, Any]]] = []
    seen: set[str] = set()
    for selector, split, p in wanted:
        label = _label(selector, split, p)
        if label in seen:
            continue
        seen.add(label)
        overrides: dict[str, Any] = {"raw": True} if p is None else {"poll_interval": p}
        configs.append((label, _aria2_extra(selector, split), overrides))
    return configs


def section_tuning(e: Env) -> list[TuneResult]:
    results: list[TuneResult] = [(lab, x, o, []) for lab, x, o in tuning_configs(e.args)]
    for r in range(e.args.tune_repeat):
        order = results[r % len(results) :] + results[: r % len(results)]
        for label, extra, overrides, runs in order:
            settle(e)
            if overrides.get("raw"):
                out = run_aria2c(e, False, extra)
                out["in_place_s"] = out["elapsed"]
                msg = f"{out['elapsed']:.2f} s"
            else:
                out = run_ours(e, extra, **overrides)
                msg = (
                    f"in place {out['in_place_s']:.2f} s, download {out.get('download_s', 0):.2f} s, "
                    f"tail {out.get('tail', 0):.2f} s, left to hash {out.get('left_to_hash', 0) / MB:.0f} MB"
                )
            out["round"] = r + 1
            runs.append(out)
            say(f"tune round {r + 1} [{label}]: {msg}, overfetch {out['overfetch'] / MB:.1f} MB")
            print(json.dumps({"section": "tuning", "config": label, **out}), file=e.log, flush=True)
    return results


# ----------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------
def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_s(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


RUN_DATE: str | None = None  # set from a results file's meta record when re-rendering


def machine_info() -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    aria2v = subprocess.run([ARIA2C, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
    wgetv = subprocess.run(["wget", "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
    shav = subprocess.run(["sha256sum", "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
    import huggingface_hub

    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    return [
        f"- date: {RUN_DATE or dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {os.cpu_count()} cores (nproc), CPU `{cpu}`, RAM {mem}, kernel {platform.release()}",
        f"- load average (1/5/15 min) at the start: {LOAD_START}, at the end: "
        f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())} (other sessions share this machine and may run their "
        "test suites meanwhile: the rounds are interleaved so that noise hits every contender alike)",
        f"- tools: `{aria2v}`, `{wgetv}`, `{shav}`, Python {platform.python_version()}, "
        f"huggingface_hub {huggingface_hub.__version__}",
    ]


def settings_lines(e: Env) -> list[str]:
    a = e.args
    return [
        f"- file: {e.size} bytes ({e.size / MiB:.0f} MiB) of random bytes, generated once in a temp dir on the same "
        "disk as every download (all deleted at the end); the source stays in the page cache",
        f"- servers: `tests.servers.FakeHub` on 127.0.0.1 (`/resolve/` answers 302 to a signed URL) and its CDN, a "
        f"`FileServer` on 127.0.0.2 capping **each connection at {a.rate / MB:.0f} MB/s**; both in the benchmark "
        "process, every contender in its own process",
        f"- aria2 (project and raw): {a.connections} connections (-x/-s), min-split-size {a.min_split}, "
        f"stream-piece-selector {PRODUCT.get('selector', '?')}, and the project's other options "
        "(`file-allocation=none`, `disk-cache=0`, `auto-save-interval=1`, ...); the raw aria2c command line is "
        "built from `Aria2Daemon._options()` less the RPC-only keys",
        f"- project{' (commit ' + PRODUCT['commit'] + ')' if PRODUCT.get('commit') else ''}: "
        "`downloader.fetch.fetch()` with `Settings` defaults except connections/min-split above "
        f"(poll_interval {PRODUCT.get('poll', float('nan')):g} s), fresh workspace per run",
        "- before every run (untimed): servers idle, `sync`, 0.3 s pause",
    ]


def reproduce_cmd(a: argparse.Namespace) -> str:
    cmd = (
        f".venv/bin/python bench/bench_download.py --size-mib {a.size_mib} --repeat {a.repeat} "
        f"--resume-repeat {a.resume_repeat} --rate {a.rate:g} --connections {a.connections}"
    )
    if a.min_split != PRODUCT.get("min_split", a.min_split):
        cmd += f" --min-split {a.min_split}"
    if getattr(a, "tune", False) or "tune" in getattr(a, "sections", ""):
        cmd += f" --tune --tune-repeat {a.tune_repeat}"
    return cmd


def paired_lines(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Ratios within each round (contenders of one round share its noise), then their median."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for name, rs in runs.items():
        for r in rs:
            by_round.setdefault(r["round"], {})[name] = r
    rounds = [v for _, v in sorted(by_round.items()) if {"aria2c", "ours", "hf_hub_download"} <= v.keys()]
    if not rounds:
        return []
    vs_aria = [v["aria2c"]["elapsed"] / v["ours"]["in_place_s"] for v in rounds]
    vs_hf = [v["hf_hub_download"]["elapsed"] / v["ours"]["in_place_s"] for v in rounds]
    raw_hf = [v["hf_hub_download"]["elapsed"] / v["aria2c"]["elapsed"] for v in rounds]
    return [
        "Within each round (the contenders of a round share its noise), file verified in place: this project / raw "
        f"aria2c throughput {', '.join(f'{x:.2f}' for x in vs_aria)} (median {med(vs_aria):.2f}×); this project / "
        f"hf_hub_download {', '.join(f'{x:.1f}' for x in vs_hf)} (median {med(vs_hf):.1f}×). For scale, raw aria2c "
        f"itself reaches {med(raw_hf):.1f}× hf_hub_download here (runs {', '.join(f'{x:.1f}' for x in raw_hf)}): "
        "16 connections × 40 MB/s would be 640 MB/s, but on 2 cores the loopback CDN (Python, in the benchmark "
        "process) and aria2c share the CPU, which caps every aria2 contender well below that.",
        "",
    ]


def throughput_md(e: Env, runs: dict[str, list[dict[str, Any]]]) -> str:
    size = e.size
    m = {c: med([r["elapsed"] for r in runs[c]]) for c in CONTENDERS}
    what = {
        "aria2c": "raw `aria2c` CLI, project's options, hub `/resolve/` URL (download only)",
        "aria2c+sha256sum": "raw `aria2c`, then `sha256sum` (second pass)",
        "ours": "this project, until `fetch()` returns (file in place, aria2c stopped)",
        "hf_hub_download": "`hf_hub_download(local_dir=...)`",
        "sha256sum": "`sha256sum` of the file alone (page cache; reference)",
    }
    lines = [
        "| contender | median s | median MB/s | best s | best MB/s | all runs (s) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    ours = runs["ours"]
    in_place = med([r["in_place_s"] for r in ours])
    b = {c: min(r["elapsed"] for r in runs[c]) for c in CONTENDERS}
    b_in_place = min(r["in_place_s"] for r in ours)
    for c in CONTENDERS:
        if c == "ours":
            all_runs = ", ".join(f"{r['in_place_s']:.2f}" for r in ours)
            lines.append(
                "| **this project: `fetch()` = resolve + aria2 + sha256 while downloading + fsync + atomic place, "
                f"until the file is verified in place** | {in_place:.2f} | {size / in_place / MB:.0f} | "
                f"{b_in_place:.2f} | {size / b_in_place / MB:.0f} | {all_runs} |"
            )
        all_runs = ", ".join(f"{r['elapsed']:.2f}" for r in runs[c])
        lines.append(
            f"| {what[c]} | {m[c]:.2f} | {size / m[c] / MB:.0f} | {b[c]:.2f} | {size / b[c] / MB:.0f} | {all_runs} |"
        )
    b_aria, b_hf = b["aria2c"] / b_in_place, b["hf_hub_download"] / b_in_place
    b_over = b_in_place / b["aria2c"] - 1
    ratio_aria = m["aria2c"] / in_place
    ratio_hf = m["hf_hub_download"] / in_place
    overhead = in_place / m["aria2c"] - 1
    ratio_aria_ret = m["aria2c"] / m["ours"]
    ratio_hf_ret = m["hf_hub_download"] / m["ours"]
    overhead_ret = m["ours"] / m["aria2c"] - 1
    hashlib_s = med([r["hashlib_s"] for r in runs["sha256sum"]])
    hash_s = med([r["hash_s"] for r in runs["aria2c+sha256sum"]])

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    bd = [
        "| phase (this project) | median s | all runs (s) |",
        "| --- | ---: | --- |",
    ]
    phases = [
        ("start: resolve on the hub, start aria2c, plan, DB", "startup_s"),
        ("download: aria2 add → last byte on disk", "download_s"),
        ("last byte → Manager sees `complete` (poll interval)", "detect_s"),
        ("rest of the sha256 (prefix hasher catching up)", "hash_rest_s"),
        ("place: fsync + chmod + rename + fsync dir", "place_s"),
        ("**verify tail: last byte → file verified and in place**", "tail"),
        ("after place: DB row done, stop aria2c (SIGTERM, wait), close", "after_place_s"),
        ("last byte → `fetch()` returned", "return_tail"),
    ]
    for label, key in phases:
        vals = [r[key] for r in ours if key in r]
        bd.append(f"| {label} | {fmt_s(med(vals) if vals else None)} | {', '.join(f'{v:.2f}' for v in vals)} |")
    left = [r.get("left_to_hash", 0) for r in ours]
    text = [
        SECTION_DOWNLOAD,
        "",
        *machine_info(),
        *settings_lines(e),
        f"- rounds: {e.args.repeat}, each running every contender once, the order rotating per round; medians below",
        "",
        *lines,
        "",
        "Targets. Medians: the first column is what a user waits for (the file verified in place), the second "
        "adds stopping aria2c before `fetch()` returns. The third compares each contender's best run, the one "
        "least disturbed by other load on this shared machine (an estimate of the intrinsic cost):",
        "",
        "| target | median, file verified in place | median, `fetch()` returned | best runs, file verified in place |",
        "| --- | --- | --- | --- |",
        f"| this project / raw aria2c throughput ≥ 0.9× | {ratio_aria:.2f}×: {verdict(ratio_aria >= 0.9)} | "
        f"{ratio_aria_ret:.2f}×: {verdict(ratio_aria_ret >= 0.9)} | {b_aria:.2f}×: {verdict(b_aria >= 0.9)} |",
        f"| this project / hf_hub_download throughput ≥ 8× | {ratio_hf:.1f}×: {verdict(ratio_hf >= 8)} | "
        f"{ratio_hf_ret:.1f}×: {verdict(ratio_hf_ret >= 8)} | {b_hf:.1f}×: {verdict(b_hf >= 8)} |",
        f"| verification overhead = ours / raw aria2c − 1 ≤ 10% | {overhead * 100:+.0f}%: "
        f"{verdict(overhead <= 0.10)} | {overhead_ret * 100:+.0f}%: {verdict(overhead_ret <= 0.10)} | "
        f"{b_over * 100:+.0f}%: {verdict(b_over <= 0.10)} |",
        "",
        f"- for comparison, the careful shell script (aria2c + sha256sum) costs "
        f"{m['aria2c+sha256sum'] / m['aria2c'] - 1:+.0%} over aria2c alone; its second pass alone takes "
        f"{hash_s:.2f} s (coreutils `sha256sum` at {size / hash_s / MB:.0f} MB/s; Python's hashlib, which the "
        f"project uses, hashes the same cached file in {hashlib_s:.2f} s = {size / hashlib_s / MB:.0f} MB/s)",
        "",
        *paired_lines(runs),
        f"CDN bytes sent beyond the file size per run (open-ended ranges cut at segment ends; median): raw aria2c "
        f"{med([r['overfetch'] for r in runs['aria2c']]) / MB:.1f} MB, this project "
        f"{med([r['overfetch'] for r in ours]) / MB:.1f} MB.",
        "",
        "Where this project's time goes (from the worker: `fetch()` timed from outside, the file's mtime = aria2's "
        "last write since `disk-cache=0`, the Manager's `HashTask` and `place` wrapped to timestamp them, DB "
        f"event times). When aria2 finished, the prefix hasher still had a median of "
        f"**{med(left) / MB:.0f} MB** of {size / MB:.0f} MB to read (runs: "
        f"{', '.join(f'{x / MB:.0f}' for x in left)} MB).",
        "",
        *bd,
        "",
        f"Reproduce: `{reproduce_cmd(e.args)}` (one invocation for every section; see `bench/README.md`).",
        "",
    ]
    return "\n".join(text)


def resume_md(e: Env, runs: dict[str, list[dict[str, Any]]], thr: dict[str, list[dict[str, Any]]] | None) -> str:
    one_sec_ours = None  # fallback when a run has no rate of its own: the project's download phase in section 1
    if thr and thr.get("ours"):
        dl = [r["download_s"] for r in thr["ours"] if "download_s" in r]
        one_sec_ours = e.size / med(dl) if dl else None

    def one_second(name: str, r: dict[str, Any]) -> float:
        rate = r.get("run_rate")
        if rate is not None and not math.isnan(rate):
            return float(rate)
        return float(one_sec_ours or 0) if name == "ours" else float(e.args.rate)

    lines = [
        "| tool | fetched again, median MB | all runs (MB) | served before the kill (MB) | one second of transfer, median (MB) | fetched again in seconds of transfer, median / worst | rerun s |",
        "| --- | ---: | --- | --- | ---: | ---: | --- |",
    ]
    verdicts = []
    for name in RESUMERS:
        rs = runs[name]
        ref = [r["refetched"] / MB for r in rs]
        first = ", ".join(f"{r['first'] / MB:.0f}" for r in rs)
        secs = [r["refetched"] / one_second(name, r) for r in rs]
        label = {
            "ours": "this project (`python -m downloader fetch`, CLI + aria2c killed -9)",
            "hf_hub_download": "`hf_hub_download` (worker process killed -9)",
            "wget -c": "`wget -c` (killed -9, rerun with -c)",
        }[name]
        oks = "" if all(r["ok"] for r in rs) else " (**a rerun ended with a wrong file**)"
        reruns = ", ".join(f"{r['second_s']:.1f}" for r in rs)
        lines.append(
            f"| {label}{oks} | {med(ref):.1f} | {', '.join(f'{x:.1f}' for x in ref)} | {first} | "
            f"{med([one_second(name, r) for r in rs]) / MB:.0f} | {med(secs):.2f} / {max(secs):.2f} | {reruns} |"
        )
    ours = runs["ours"]
    detail = [
        "| this project, run | CDN sent before the kill (MB) | rate up to the kill (MB/s) | control file at the kill: bytes recorded (MB) | its age at the kill (s) | fetched again (MB) | = seconds of transfer |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, r in enumerate(ours, 1):
        saved = r.get("saved")
        age = r.get("control_age")
        detail.append(
            f"| {i} | {r['first'] / MB:.0f} | {one_second('ours', r) / MB:.0f} | "
            f"{'–' if saved is None else f'{saved / MB:.0f}'} | {'–' if age is None else f'{age:.2f}'} | "
            f"{r['refetched'] / MB:.1f} | {r['refetched'] / one_second('ours', r):.2f} |"
        )
    secs = [r["refetched"] / one_second("ours", r) for r in ours]
    over = sum(1 for x in secs if x > 1.0)
    verdicts.append(
        f"- this project: fetched again a median of {med([r['refetched'] for r in ours]) / MB:.1f} MB = "
        f"{med(secs):.2f} s of its own transfer rate at the kill (worst {max(secs):.2f} s; {over} of {len(secs)} "
        f"runs above one second): **{'met' if over == 0 else 'not met'}** (target: at most one second of transfer)"
    )
    hf = runs["hf_hub_download"]
    left = max(r.get("leftover_incomplete", 0) for r in hf)
    verdicts.append(
        f"- hf_hub_download: fetched again {med([r['refetched'] for r in hf]) / MB:.0f} MB (median) of a "
        f"{e.size / MB:.0f} MB file: it downloads into a process-unique `*.<uuid>.incomplete` file, so a restarted "
        f"process never resumes; the killed run's partial file stays behind in `local_dir/.cache` "
        f"({left / MB:.0f} MB left on disk after the rerun)"
    )
    wg = runs["wget -c"]
    verdicts.append(
        f"- wget -c: fetched again {med([r['refetched'] for r in wg]) / MB:.1f} MB (median): what the server had "
        "handed to the kernel but wget had not written when it died"
    )
    text = [
        SECTION_RESUME,
        "",
        f"Same file and servers as above ({e.size / MiB:.0f} MiB, {e.args.rate / MB:.0f} MB/s per connection). Each "
        "tool is started, killed with SIGKILL once the CDN has sent half of the file (polled every 5 ms), then run "
        "again to completion; fetched again = bytes the CDN sent over both runs − file size (after `wait_idle()`; "
        "counts bytes handed to the kernel, so data in socket buffers at the kill counts as fetched). For the "
        "project, aria2c is killed first, then the CLI's process group, as a stopped pod does (aria2c is never "
        "given the chance to save its control file on the way out). Every rerun's file was checked "
        f"against the sha256. Rounds: {e.args.resume_repeat} (the project {e.args.ours_resume_per_round}× per round).",
        "",
        *lines,
        "",
        *verdicts,
        "",
        "Each kill of the project in detail (the control file is read after the kill; aria2 rewrites it every "
        "`auto-save-interval=1` s, on its own clock, so what it records is up to ~1 s old, and the bytes "
        "fetched again are what arrived since plus what was in flight):",
        "",
        *detail,
        "",
        f"Reproduce: `{reproduce_cmd(e.args)}`.",
        "",
    ]
    return "\n".join(text)


def _m(runs: list[dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in runs if key in r]
    return med(vals) if vals else float("nan")


def _f(x: float, spec: str = ".2f", scale: float = 1.0) -> str:
    return "–" if math.isnan(x) else format(x / scale, spec)


def tuning_md(e: Env, results: list[TuneResult]) -> str:
    lines = [
        "| configuration (aria2 options over the project's) | until in place s | `fetch()` returned s | aria2 download s | download MB/s | CDN sent beyond the size (MB) | left to hash at the last byte (MB) | last byte → Manager sees it s | hash rest s | place (fsync) s | **verify tail s** | all until-in-place runs (s) | all verify tails (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for label, _extra, _o, runs in results:
        dl = _m(runs, "download_s")
        all_e2e = ", ".join(f"{r['in_place_s']:.2f}" for r in runs)
        all_tail = ", ".join(f"{r['tail']:.2f}" for r in runs if "tail" in r) or "–"
        lines.append(
            f"| {label} | {_f(_m(runs, 'in_place_s'))} | {_f(_m(runs, 'elapsed'))} | {_f(dl)} | "
            f"{_f(e.size / dl / MB, '.0f')} | {_f(_m(runs, 'overfetch'), '.1f', MB)} | "
            f"{_f(_m(runs, 'left_to_hash'), '.0f', MB)} | {_f(_m(runs, 'detect_s'))} | {_f(_m(runs, 'hash_rest_s'))} | "
            f"{_f(_m(runs, 'place_s'))} | {_f(_m(runs, 'tail'))} | {all_e2e} | {all_tail} |"
        )
    text = [
        f"### With a {e.size / MiB:.0f} MiB file",
        "",
        f"{e.args.tune_repeat} round(s), all configurations interleaved in each; medians.",
        "",
        *lines,
        "",
        *tuning_findings(e, results),
        "",
        f"Reproduce: `{reproduce_cmd(e.args)}` (`--sections tune` for this part alone; `--tune-selectors`, "
        "`--tune-splits`, `--tune-extra`, `--tune-raw` choose the matrix).",
        "",
    ]
    return "\n".join(text)


TUNING_INTRO = (
    "The project's `fetch()` with its aria2 options changed by patching `Aria2Daemon._options` (and "
    "`Settings.poll_interval`) inside the benchmark's worker process only; the product files are untouched. The "
    "project's current defaults are read from its code and always in the matrix. Same servers (40 MB/s per "
    "connection) and machine as above. `selector=default` is aria2's own default piece selector (what the project "
    "used before commit 573ecf1, with min-split 16M and a 0.5 s poll); 'raw aria2c' rows are the bare CLI "
    "(download only) for reference. 'CDN sent beyond the size' is bandwidth wasted: bytes the server had sent on "
    "connections aria2 then dropped mid-range. One part per file size; a run replaces only the part of its own "
    "size."
)


def tuning_section(out: Path, block: str) -> str:
    """The whole `## Tuning notes` section: the parts for other file sizes already in `out`, plus `block`."""
    parts: dict[str, str] = {}
    if out.exists():
        text = out.read_text()
        if SECTION_TUNING in text:
            body = text.split(SECTION_TUNING, 1)[1]
            body = body.split("\n## ", 1)[0]
            chunks = body.split("\n### ")
            for chunk in chunks[1:]:
                heading = "### " + chunk.split("\n", 1)[0].strip()
                parts[heading] = "### " + chunk.rstrip() + "\n"
    heading = block.split("\n", 1)[0].strip()
    parts[heading] = block.rstrip() + "\n"

    def size_of(h: str) -> float:
        digits = "".join(ch for ch in h if ch.isdigit())
        return float(digits) if digits else 0.0

    ordered = [parts[h] for h in sorted(parts, key=size_of)]
    return "\n".join([SECTION_TUNING, "", TUNING_INTRO, "", *ordered])


def tuning_findings(e: Env, results: list[TuneResult]) -> list[str]:
    """What the matrix says, computed from it (so a rerun rewrites the findings with its own numbers)."""
    size = e.size
    ours = [(label, x, o, runs) for label, x, o, runs in results if not o.get("raw") and runs]
    raw = [(label, runs) for label, x, o, runs in results if o.get("raw") and runs]
    today_label = _label(PRODUCT.get("selector", "default"), PRODUCT.get("min_split", e.args.min_split), PRODUCT.get("poll"))
    today = next((r for r in ours if r[0] == today_label), None)
    if today is None:
        return []

    def rate(runs: list[dict[str, Any]]) -> float:
        return size / _m(runs, "download_s")

    def sel(r: TuneResult) -> str:
        return r[1].get("stream-piece-selector", "default")

    base_rate, base_tail, base_in = rate(today[3]), _m(today[3], "tail"), _m(today[3], "in_place_s")
    out = [
        "Findings (computed from the table above; a rerun rewrites them with its own numbers):",
        "",
        f"- **The project as it is** ({today_label}): file verified in place after {base_in:.2f} s, verify tail "
        f"{base_tail:.2f} s after aria2's last byte, {_m(today[3], 'left_to_hash') / MB:.0f} MB left to hash at "
        f"that moment, download {base_rate / MB:.0f} MB/s, {_m(today[3], 'overfetch') / MB:.0f} MB sent for nothing.",
    ]
    default = [r for r in ours if sel(r) == "default"]
    if default:
        out.append(
            "- With aria2's **default** piece selector the prefix hasher is idle during the download: "
            + "; ".join(
                f"{r[0]}: {_m(r[3], 'left_to_hash') / MB:.0f} MB of {size / MB:.0f} MB left at the last byte, tail "
                f"{_m(r[3], 'tail'):.2f} s"
                for r in default
            )
            + f". It starts the {e.args.connections} connections at offsets spread over the whole file, so the "
            "contiguous completed prefix (all the hasher may read) grows only once the first range is done, and "
            "'hash while downloading' becomes a second pass at the end."
        )
    inorder = [r for r in ours if sel(r) == "inorder"]
    if inorder:
        out.append(
            "- With **inorder** the connections take min-split-size chunks from the front, so the prefix trails "
            "the download front by about connections × min-split-size: "
            + "; ".join(
                f"{r[0]}: {_m(r[3], 'left_to_hash') / MB:.0f} MB left, tail {_m(r[3], 'tail'):.2f} s, "
                f"{rate(r[3]) / MB:.0f} MB/s, {_m(r[3], 'overfetch') / MB:.0f} MB sent for nothing"
                for r in inorder
            )
            + ". The price: each chunk end re-splits a range another connection is still receiving, and what the "
            "CDN had already sent on it is thrown away (on loopback with a CPU-starved aria2c the socket buffers "
            "hold several MB per connection; on a real network it is about the bandwidth-delay product), and "
            "small chunks mean a new request each."
        )
    pairs = []
    for r in ours:
        for q in ours:
            if r is not q and r[1] == q[1] and r[2]["poll_interval"] < q[2]["poll_interval"]:
                pairs.append((r, q))
    if pairs:
        out.append(
            "- The Manager's loop (`Settings.poll_interval`; since commit 573ecf1 a finished hash also wakes it): "
            + "; ".join(
                f"{r[1]['stream-piece-selector']}/{r[1]['min-split-size']}: poll {r[2]['poll_interval']:g} s → tail "
                f"{_m(r[3], 'tail'):.2f} s, in place {_m(r[3], 'in_place_s'):.2f} s vs poll "
                f"{q[2]['poll_interval']:g} s → {_m(q[3], 'tail'):.2f} s, {_m(q[3], 'in_place_s'):.2f} s"
                for r, q in pairs
            )
            + "."
        )
    if raw:
        out.append(
            "- Raw aria2c for reference (download only): "
            + "; ".join(
                f"{label.split(': ', 1)[1]}: {_m(runs, 'elapsed'):.2f} s = {size / _m(runs, 'elapsed') / MB:.0f} MB/s, "
                f"{_m(runs, 'overfetch') / MB:.0f} MB sent for nothing"
                for label, runs in raw
            )
            + "."
        )
    if raw:
        vs = "; ".join(
            f"vs {label.split(': ', 1)[1]}: {_m(runs, 'elapsed') / base_in:.2f}× the throughput, verification "
            f"overhead {base_in / _m(runs, 'elapsed') - 1:+.0%}"
            for label, runs in raw
        )
        out.append(
            "- **Targets, from this matrix** (the raw aria2c rows ran in the same interleaved rounds as the "
            f"project's): the project as it is, until the file is verified in place, {vs} (targets: ≥ 0.9×, "
            "≤ +10%)."
        )
    # The rule: what the user waits for (file verified in place), among configurations that neither slow the
    # download by more than 10% against the project as it is nor make the CDN send more than 5% for nothing.
    eligible = [r for r in ours if rate(r[3]) >= 0.9 * base_rate and _m(r[3], "overfetch") <= 0.05 * size]
    if eligible:
        best = min(eligible, key=lambda r: _m(r[3], "in_place_s"))
        if best is today:
            what = "keep the project's settings"
        else:
            changes = []
            if sel(best) != PRODUCT.get("selector"):
                changes.append(f"`stream-piece-selector={sel(best)}` in `downloader/aria2.py` `_options()`")
            if best[1]["min-split-size"] != PRODUCT.get("min_split"):
                changes.append(f"`min_split_size=\"{best[1]['min-split-size']}\"` (`Settings` / `ARIA2_MIN_SPLIT_SIZE`)")
            if best[2]["poll_interval"] != PRODUCT.get("poll"):
                changes.append(f"`poll_interval={best[2]['poll_interval']:g}` in `Settings`")
            what = "; ".join(changes)
        out.append(
            f"- **Verdict of the rule** (lowest median time until the file is verified in place, among configurations "
            f"with download speed ≥ 90% of the project's {base_rate / MB:.0f} MB/s and ≤ 5% of the file sent for "
            f"nothing): **{best[0]}**: in place after {_m(best[3], 'in_place_s'):.2f} s vs {base_in:.2f} s, verify "
            f"tail {_m(best[3], 'tail'):.2f} s vs {base_tail:.2f} s, {rate(best[3]) / MB:.0f} MB/s, "
            f"{_m(best[3], 'overfetch') / MB:.0f} MB sent for nothing: {what}."
        )
    return out


def write_sections(out: Path, sections: dict[str, str]) -> None:
    """Replace (or append) our `## ` sections in `out`, keeping everything else in the file."""
    text = out.read_text() if out.exists() else "# Benchmarks\n\nMeasured on the project's own machine; each section says how to reproduce it.\n"
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("## "):
            blocks.append([])
        blocks[-1].append(line)
    head, rest = blocks[0], blocks[1:]
    done: set[str] = set()
    new_blocks: list[str] = ["\n".join(head).rstrip() + "\n"]
    for b in rest:
        heading = b[0].strip()
        if heading in sections:
            new_blocks.append(sections[heading].rstrip() + "\n")
            done.add(heading)
        else:
            new_blocks.append("\n".join(b).rstrip() + "\n")
    for heading, body in sections.items():
        if heading not in done:
            new_blocks.append(body.rstrip() + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(new_blocks))
    os.replace(tmp, out)


# ----------------------------------------------------------------------------------------------------
def git_commit() -> str:
    """HEAD's short hash, with '+changes' when the package has uncommitted edits (read-only git calls)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "downloader"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return ""
    return head + ("+changes" if dirty else "")


def make_blob(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * MiB))
            h.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


def _config_from_label(label: str) -> tuple[dict[str, str], dict[str, Any]]:
    raw = label.startswith("raw aria2c")
    fields = dict(part.split("=", 1) for part in label.split(": ", 1)[-1].split(", "))
    extra = _aria2_extra(fields["selector"], fields["min-split"])
    overrides: dict[str, Any] = {"raw": True} if raw else {}
    poll = fields.get("poll", fields.get("poll_interval"))
    if poll is not None:
        overrides["poll_interval"] = float(poll.removesuffix(" s"))
    elif not raw:
        overrides["poll_interval"] = float(PRODUCT["poll"])  # older results: the product's poll interval
    return extra, overrides


def _normal_label(extra: dict[str, str], overrides: dict[str, Any]) -> str:
    return _label(extra["stream-piece-selector"], extra["min-split-size"], None if overrides.get("raw") else overrides["poll_interval"])


def render(args: argparse.Namespace) -> None:
    """Rewrite the markdown from a results file kept with BENCH_KEEP_LOG (no download is run)."""
    global LOAD_START, RUN_DATE
    records = [json.loads(line) for line in Path(args.render).read_text().splitlines() if line.strip()]
    meta = next((r for r in records if r["section"] == "meta"), None)
    if meta is not None:
        for key, value in meta["args"].items():
            if key not in ("out", "render"):
                setattr(args, key, value)
        LOAD_START, RUN_DATE = meta["load_start"], meta["date"]
        PRODUCT.update(meta.get("product") or {})
        size = int(meta["size"])
    else:
        args.size_mib = args.size_mib or 1024
        size = args.size_mib * MiB
    strip = ("section", "contender", "config")
    thr: dict[str, list[dict[str, Any]]] = {c: [] for c in CONTENDERS}
    res: dict[str, list[dict[str, Any]]] = {c: [] for c in RESUMERS}
    tun: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        body = {k: v for k, v in r.items() if k not in strip}
        if r["section"] == "throughput":
            thr[r["contender"]].append(body)
        elif r["section"] == "resume":
            res[r["contender"]].append(body)
        elif r["section"] == "tuning":
            tun.setdefault(r["config"], []).append(body)
    e = Env(args=args, tmp=Path("."), blob=Path("."), size=size, sha256="", hub=None, cdn=None, cdn_path="",
            resolve_url="", log=None)
    sections: dict[str, str] = {}
    if all(thr.values()):
        args.repeat = max(x["round"] for x in thr["ours"])
        sections[SECTION_DOWNLOAD] = throughput_md(e, thr)
    if all(res.values()):
        args.resume_repeat = max(x["round"] for x in res["ours"])
        args.ours_resume_per_round = len(res["ours"]) // args.resume_repeat
        sections[SECTION_RESUME] = resume_md(e, res, thr if all(thr.values()) else None)
    if tun:
        args.tune_repeat = max(x["round"] for runs in tun.values() for x in runs)
        results: list[TuneResult] = []
        for label, runs in tun.items():
            extra, overrides = _config_from_label(label)
            results.append((_normal_label(extra, overrides), extra, overrides, runs))
        sections[SECTION_TUNING] = tuning_section(Path(args.out), tuning_md(e, results))
    write_sections(Path(args.out), sections)
    say(f"rendered {', '.join(sections)} into {args.out}")


def main() -> None:
    from downloader.config import Settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=None, help="file size in MiB (default 1024; --quick: 128)")
    ap.add_argument("--repeat", type=int, default=None, help="rounds for the throughput section (default 3; --quick: 1)")
    ap.add_argument("--resume-repeat", type=int, default=None, help="rounds for the kill -9 section (default: --repeat)")
    ap.add_argument("--ours-resume-per-round", type=int, default=2, help="kill -9 runs of the project per round (cheap)")
    ap.add_argument("--kill-at", type=float, default=0.5, help="kill -9 once the CDN sent this fraction (default 0.5)")
    ap.add_argument("--rate", type=float, default=40e6, help="CDN cap per connection, bytes/s (default 40e6)")
    ap.add_argument("--connections", type=int, default=16, help="aria2 -x/-s (default 16)")
    ap.add_argument("--min-split", default=None, help=f"aria2 min-split-size (default: the project's, now {Settings.min_split_size})")
    ap.add_argument("--out", default=str(REPO / "docs" / "BENCHMARKS.md"), help="markdown file to update")
    ap.add_argument("--quick", action="store_true", help="smoke run: 128 MiB, 1 round")
    ap.add_argument("--sections", default="download,resume", help="comma list of download,resume,tune")
    ap.add_argument("--tune", action="store_true", help="also run the tuning matrix (same as adding tune to --sections)")
    ap.add_argument("--tune-selectors", default="default,inorder", help="stream-piece-selector values, crossed with --tune-splits (at the project's poll interval)")
    ap.add_argument("--tune-splits", default="1M,4M,16M,32M", help="min-split-size values")
    ap.add_argument("--tune-extra", default="default/16M/0.5,inorder/32M/0.5", help="more rows, selector/split/poll_interval (default/16M/0.5 = the project before in-order pieces)")
    ap.add_argument("--tune-raw", default="default/16M,inorder/32M", help="raw aria2c reference rows, selector/split")
    ap.add_argument("--tune-repeat", type=int, default=None, help="rounds of the tuning matrix (default: --repeat)")
    ap.add_argument("--keep-tmp", action="store_true", help="do not delete the temp dir (debugging)")
    ap.add_argument("--render", metavar="RESULTS_JSONL", help="only rewrite --out from a kept results file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        run_worker(args.worker)
        return
    if args.render:
        render(args)
        return
    args.size_mib = args.size_mib or (128 if args.quick else 1024)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.resume_repeat = args.resume_repeat or args.repeat
    args.tune_repeat = args.tune_repeat or args.repeat
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    if args.tune:
        sections.add("tune")
    for tool in ("wget", "sha256sum", ARIA2C):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (apt-get install -y wget aria2 coreutils)")

    from tests.servers import FakeHub, FileServer

    PRODUCT.update(product_defaults())
    PRODUCT["commit"] = git_commit()
    if args.min_split is None:
        args.min_split = PRODUCT["min_split"]
    size = args.size_mib * MiB
    tmp = Path(tempfile.mkdtemp(prefix="bench-download-"))
    say(f"temp dir {tmp}; generating {size} random bytes")
    blob = tmp / "blob.bin"
    digest = make_blob(blob, size)
    log_path = tmp / "results.jsonl"
    cdn = FileServer("127.0.0.2", rate_limit=args.rate, sign_required=True)
    out_sections: dict[str, str] = {}
    try:
        with cdn, FakeHub(cdn=cdn) as hub, open(log_path, "w") as log:
            meta = {
                "section": "meta",
                "size": size,
                "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                "load_start": LOAD_START,
                "product": PRODUCT,
                "args": {k: v for k, v in vars(args).items() if k != "worker"},
            }
            print(json.dumps(meta), file=log, flush=True)
            info = hub.add_file(REPO_ID, FILENAME, blob)
            assert info.sha256 == digest and info.cdn_path is not None
            e = Env(
                args=args, tmp=tmp, blob=blob, size=size, sha256=digest, hub=hub, cdn=cdn,
                cdn_path=info.cdn_path, resolve_url=hub.file_url(REPO_ID, FILENAME, revision=info.commit), log=log,
            )
            thr = None
            if sections & {"download", "tune"}:
                # The first download after writing the source file runs noticeably slower (page cache and
                # writeback settling): one untimed run of each aria2 contender first.
                say("warm-up (untimed)")
                settle(e)
                run_aria2c(e, False)
                settle(e)
                run_ours(e)
            if "download" in sections:
                say("section 1: throughput")
                thr = section_throughput(e)
                out_sections[SECTION_DOWNLOAD] = throughput_md(e, thr)
            if "resume" in sections:
                say("section 2: resume after kill -9")
                res = section_resume(e)
                out_sections[SECTION_RESUME] = resume_md(e, res, thr)
            if "tune" in sections:
                say("section 3: tuning")
                tun = section_tuning(e)
                out_sections[SECTION_TUNING] = tuning_section(Path(args.out), tuning_md(e, tun))
            log.flush()
            if os.environ.get("BENCH_KEEP_LOG"):
                shutil.copy(log_path, os.environ["BENCH_KEEP_LOG"])
    finally:
        if args.keep_tmp:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    out = Path(args.out)
    if out_sections:
        write_sections(out, out_sections)
        say(f"wrote {', '.join(out_sections)} to {out}")
        for body in out_sections.values():
            print(body)


if __name__ == "__main__":
    main()
