"""nginx as the CDN: this project's `fetch` (the real CLI, one process per run) vs raw aria2c, on loopback.

The Python loopback server of bench_download.py takes CPU that the contenders need on a 2-core machine; nginx
with `sendfile on` serves the same bytes for a fraction of it, so what is left is the contenders' own cost.
nginx (Debian's nginx-light; installed with apt-get when missing and we are root) runs as a child process
with `-p <tmp>` and `daemon off`, its config written into the temp folder, every connection capped with
`limit_rate` (40m = 40 MiB/s) as a CDN does, and is stopped at the end.

Contenders, interleaved (each round runs each once, the order rotating): `python -m downloader fetch` through
bench/fetch_probe.py (timestamps from inside the process), the same with aria2's own piece selector and
min-split-size, raw aria2c with its defaults (-x/-s 16), raw aria2c with the project's selector and
min-split-size only, raw aria2c with every option the project gives its daemon. First and last byte come
from nginx's access log ($msec, $request_time) and the file's mtime.

    .venv/bin/python bench/bench_nginx.py                 # 1 GiB, 3 rounds (~3 min); writes its section
    .venv/bin/python bench/bench_nginx.py --size-mib 256 --rounds 1 --out /tmp/n.md   # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_download import DAEMON_ONLY, write_sections

SECTION = "## nginx as the CDN: `downloader fetch` vs raw aria2c"
ARIA2C = shutil.which("aria2c") or "/usr/bin/aria2c"
NAME = "model.safetensors"
MB, MiB = 1e6, 1 << 20
LOAD_START = "/".join(f"{x:.2f}" for x in os.getloadavg())
ARIA2_DEFAULTS = {"stream-piece-selector": "default", "min-split-size": "20M"}  # aria2c's own, for these two
PROJECT_PIECES = {"stream-piece-selector": "inorder", "min-split-size": "32M"}

CONTENDERS = {
    "ours": "this project: `python -m downloader fetch manifest.yaml` (resolve, aria2c, sha256 while downloading, "
            "place), process start to exit",
    "ours-aria2-defaults": "the same, aria2's own selector and min-split-size (default, 20M) patched in",
    "raw": "raw `aria2c -x16 -s16` with aria2's defaults (download only)",
    "raw-inorder-32M": "raw `aria2c -x16 -s16` + the project's selector and min-split-size (inorder, 32M)",
    "raw-project": "raw `aria2c` with every option the project gives its daemon (less RPC ones)",
}


# --- nginx ---------------------------------------------------------------------------------------------
def nginx_binary() -> str:
    """nginx's path; installs Debian's nginx-light with apt-get when missing and we are root, else exits."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("nginx is missing: install it as root with `apt-get install -y nginx-light`, then run this again")
    print("installing nginx-light with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], check=True, env=env)
    return shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """nginx serving `root` on loopback, every connection capped at `rate`; a child process of ours."""

    def __init__(self, exe: str, prefix: Path, root: Path, rate: str) -> None:
        self.exe, self.prefix, self.port = exe, prefix, free_port()
        self.access_log = prefix / "access.log"
        prefix.mkdir(parents=True, exist_ok=True)
        # Temp paths inside the prefix: Debian's defaults are under /var/lib/nginx, which a test box may lack.
        temp = "\n".join(f"    {d}_temp_path {prefix / d};" for d in ("client_body", "proxy", "fastcgi"))
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read a 0700 temp dir of ours
        (prefix / "nginx.conf").write_text(f"""{user}daemon off;
worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} warn;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    log_format timing '$msec $request_time $status $bytes_sent $request_method $uri';
    access_log {self.access_log} timing;
{temp}
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000;
    server {{
        listen 127.0.0.1:{self.port};
        root {root};
        limit_rate {rate};
    }}
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        conf = self.prefix / "nginx.conf"
        self.proc = subprocess.Popen([self.exe, "-p", str(self.prefix), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.prefix / "error.log").read_text() if (self.prefix / "error.log").exists() else ""
                raise RuntimeError(f"nginx did not start (exit {self.proc.poll()}): {log}")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish the requests in flight, then exit
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_offset(self) -> int:
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def requests_since(self, offset: int) -> list[dict[str, Any]]:
        """The requests logged after `offset`: start and end (wall clock), status, bytes sent, method, path."""
        with open(self.access_log, "rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode().splitlines()
        out = []
        for line in lines:
            msec, rtime, status, sent, method, uri = line.split()
            out.append({"start": float(msec) - float(rtime), "end": float(msec), "status": int(status),
                        "sent": int(sent), "method": method, "uri": uri})
        return out


# --- one run ---------------------------------------------------------------------------------------------
def make_file(path: Path, size: int) -> str:
    """`size` random bytes at `path`; returns their sha256."""
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(left, 16 * MiB))
            h.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


def project_options(directory: Path, connections: int) -> dict[str, str]:
    """Every aria2 option the project gives its daemon, less the RPC/daemon-only ones (read from the code)."""
    from downloader.aria2 import Aria2Daemon
    from downloader.config import Settings

    settings = Settings(workspace=directory, models_dir=directory, state_dir=directory, manifest_dirs=(),
                        connections=connections)
    daemon = Aria2Daemon(settings)
    daemon.log_path = directory / "aria2.log"
    return {k: v for k, v in daemon._options(0, "").items() if k not in DAEMON_ONLY}


VARIANTS: dict[str, tuple[str, dict[str, str]]] = {}  # --raw-variant / --project-variant: kind -> (base, options)


def add_variant(base: str, spec: str) -> str:
    """Register a raw aria2c contender: `base` (raw or raw-project) with `spec` ("key=value,...") on top."""
    options = dict(item.split("=", 1) for item in spec.split(",") if item)
    kind = f"{base} + {spec}"
    VARIANTS[kind] = (base, options)
    CONTENDERS[kind] = f"{CONTENDERS[base]}, with `{spec}`"
    return kind


def raw_cmd(kind: str, url: str, directory: Path, connections: int) -> list[str]:
    base, extra = VARIANTS.get(kind, (kind, {}))
    if base == "raw-project":
        options = project_options(directory, connections)
    else:
        options = {"max-connection-per-server": str(connections), "split": str(connections),
                   "console-log-level": "warn", "summary-interval": "0"}
        if base == "raw-inorder-32M":
            options.update(PROJECT_PIECES)
    options.update(extra)
    return [ARIA2C, *(f"--{k}={v}" for k, v in options.items()), f"--dir={directory}", f"--out={NAME}", url]


def ours_cmd(manifest: Path) -> list[str]:
    return [sys.executable, str(REPO / "bench" / "fetch_probe.py"), "fetch", str(manifest)]


def one_run(kind: str, a: argparse.Namespace, nginx: Nginx, tmp: Path, sha256: str, size: int) -> dict[str, Any]:
    run_dir = tmp / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    url = f"http://127.0.0.1:{nginx.port}/{NAME}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DOWNLOADER_", "MODEL_", "ARIA2"))}
    probe_out = run_dir / "timeline.json"
    if kind.startswith("ours"):
        manifest = run_dir / "bench.yaml"
        manifest.write_text(f"models:\n  - id: bench\n    source: {url}\n    dest: bench/{NAME}\n"
                            f"    sha256: {sha256}\n")
        env.update(WORKSPACE=str(run_dir / "ws"), ARIA2_CONNECTIONS=str(a.connections), BENCH_PROBE_OUT=str(probe_out),
                   BENCH_ARIA2_EXTRA=json.dumps(ARIA2_DEFAULTS if kind == "ours-aria2-defaults" else {}))
        cmd, dest = ours_cmd(manifest), run_dir / "ws" / "ComfyUI" / "models" / "bench" / NAME
    else:
        cmd, dest = raw_cmd(kind, url, run_dir, a.connections), run_dir / NAME
    subprocess.run(["sync"], check=False)
    time.sleep(0.3)  # let the disk settle (untimed)
    offset = nginx.log_offset()
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    t_end = time.time()
    if proc.returncode != 0 or not dest.exists() or dest.stat().st_size != size:
        raise RuntimeError(f"{kind} failed (exit {proc.returncode}):\n{proc.stdout.decode(errors='replace')[-2000:]}")
    time.sleep(0.2)  # nginx writes its log line when a request ends
    reqs = nginx.requests_since(offset)
    rec: dict[str, Any] = {
        "kind": kind, "elapsed": t_end - t0, "t0": t0, "end": t_end,
        "last_byte": dest.stat().st_mtime_ns / 1e9,  # aria2's last write (the rename keeps the mtime)
        # aria2's GETs; a HEAD is the project's resolve step asking for the size
        "first_request": min(r["start"] for r in reqs if r["method"] == "GET"),
        "last_response_end": max(r["end"] for r in reqs),
        "requests": sum(1 for r in reqs if r["method"] == "GET"), "sent": sum(r["sent"] for r in reqs), "size": size,
    }
    if kind.startswith("ours"):
        rec["timeline"] = json.loads(probe_out.read_text())
        rec["events"] = db_events(run_dir / "ws" / ".downloader" / "state.db")
    shutil.rmtree(run_dir, ignore_errors=True)
    return rec


def db_events(db: Path) -> list[tuple[str, float]]:
    """The download's events from the state DB, oldest first: (message, wall-clock time)."""
    from downloader.state import Store

    with Store(db) as store:
        return [(e.message, e.at.replace(tzinfo=dt.timezone.utc).timestamp())
                for e in reversed(store.events("bench", limit=50))]


# --- the report --------------------------------------------------------------------------------------------
PHASES = [  # (label, from, to) over the timeline of `ours`; "t0" = the benchmark spawned the process
    ("process spawned → interpreter up (Python start-up, site)", "t0", "python"),
    ("→ CLI imported (`downloader.cli`: click, rich, pydantic, SQLAlchemy, ...)", "python", "imports"),
    ("→ manifest loaded", "imports", "manifest"),
    ("→ resolving starts (state DB opened, plan)", "manifest", "resolve_start"),
    ("→ resolved (HEAD for the size)", "resolve_start", "resolved"),
    ("→ aria2c being started (disk check, workspace lock)", "resolved", "aria2_start"),
    ("→ aria2c's RPC answers (spawn, wait ready)", "aria2_start", "aria2_ready"),
    ("→ download added (loop's first tick, DB, addUri)", "aria2_ready", "added"),
    ("→ aria2's first GET reaches nginx", "added", "first_request"),
    ("→ last byte on disk (the download)", "first_request", "last_byte"),
    ("→ the loop sees aria2 `complete` (poll)", "last_byte", "complete_seen"),
    ("→ sha256 done (prefix hasher catching up)", "complete_seen", "place_start"),
    ("→ placed (fsync, rename)", "place_start", "placed"),
    ("→ Manager closed (aria2c stopped)", "placed", "closed"),
    ("→ process exited (report, interpreter shutdown)", "closed", "end"),
]


SUMMARY = [  # the same timeline in four parts
    ("**before the download: process start → download added**", "t0", "added"),
    ("**the download: added → last byte on disk**", "added", "last_byte"),
    ("**the verify tail: last byte → file verified in place**", "last_byte", "placed"),
    ("**the exit: in place → process exited**", "placed", "end"),
]


def points(r: dict[str, Any]) -> dict[str, float]:
    return {**r.get("timeline", {}), **{k: r[k] for k in ("t0", "end", "last_byte", "first_request")}}


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render(a: argparse.Namespace, runs: list[dict[str, Any]], nginx_version: str) -> str:
    by: dict[str, list[dict[str, Any]]] = {k: [r for r in runs if r["kind"] == k] for k in CONTENDERS}
    size = runs[0]["size"]
    aria2v = subprocess.run([ARIA2C, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
    lines = [
        SECTION, "",
        (f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; machine: {os.cpu_count()} cores, "
        f"kernel {platform.release()}, **shared with other sessions running their tests** (load average at the "
        f"start {LOAD_START}, at the end {'/'.join(f'{x:.2f}' for x in os.getloadavg())}): absolute times are "
        "noisy, the ratios come from interleaved rounds"),
        f"- file: {size} bytes ({size / MiB:.0f} MiB) of random bytes (sha256 pinned in the manifest), served by "
        f"`{nginx_version}` on 127.0.0.1 (one worker, `sendfile on`, `limit_rate {a.rate}` per connection) from "
        "the same disk; `aria2c` " + aria2v.split()[-1] + f", {a.connections} connections",
        (f"- rounds: {a.rounds}, each running every contender once, the order rotating; fresh workspace or folder "
        "per run; `sync` and 0.3 s pause before each (untimed)"), "",
        "| contender | median s | median MB/s | best s | all runs (s) | GET requests | sent beyond the size (MB) |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for kind, rs in by.items():
        if not rs:
            continue
        times = [r["elapsed"] for r in rs]
        lines.append(f"| {CONTENDERS[kind]} | {med(times):.2f} | {size / med(times) / MB:.0f} | {min(times):.2f} | "
                     f"{', '.join(f'{t:.2f}' for t in times)} | {med([r['requests'] for r in rs]):.0f} | "
                     f"{med([(r['sent'] - size) / MB for r in rs]):.1f} |")
    lines += ["", "Ratios within each round (throughput, this project / contender; >1 = this project faster):", ""]
    rounds = sorted({r["round"] for r in runs})
    for kind, what in CONTENDERS.items():
        if kind == "ours" or not by.get(kind):
            continue
        ratios = []
        for n in rounds:
            ours = [r for r in by["ours"] if r["round"] == n]
            other = [r for r in by[kind] if r["round"] == n]
            if ours and other:
                ratios.append(other[0]["elapsed"] / ours[0]["elapsed"])
        lines.append(f"- vs {what}: median **{med(ratios):.2f}×** "
                     f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    lines += ["", ("Where the time goes (medians over the runs; `ours` from bench/fetch_probe.py's timestamps, "
              "nginx's log and the file's mtime):"), "",
              "| phase | ours s | ours, aria2 defaults s |", "| --- | ---: | ---: |"]
    for label, start, stop in PHASES + SUMMARY:
        cells = []
        for kind in ("ours", "ours-aria2-defaults"):
            vals = [points(r)[stop] - points(r)[start] for r in by.get(kind, [])
                    if start in points(r) and stop in points(r)]
            cells.append(f"{med(vals):.2f}" if vals else "–")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    raw_kinds = [k for k in CONTENDERS if k.startswith("raw") and by.get(k)]
    lines += ["", "| raw aria2c phase | " + " | ".join(f"`{k}`" for k in raw_kinds) + " |",
              "| --- |" + " ---: |" * len(raw_kinds)]
    for label, start, stop in (("spawned → first GET reaches nginx", "t0", "first_request"),
                               ("first GET → last byte on disk (= nginx's last response end)", "first_request",
                                "last_byte"),
                               ("last byte → process exited", "last_byte", "end")):
        cells = [f"{med([r[stop] - r[start] for r in by[k]]):.2f}" for k in raw_kinds]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    left = [r["timeline"].get("left_to_hash", 0) / MB for r in by.get("ours", []) if "timeline" in r]
    if left:
        lines += ["", f"Left to hash when aria2 finished (ours): median {med(left):.0f} MB of {size / MB:.0f} MB."]
    lines += ["", (f"Reproduce: `.venv/bin/python bench/bench_nginx.py --size-mib {a.size_mib} --rounds {a.rounds} "
              f"--connections {a.connections} --rate {a.rate}` (see bench/README.md).")]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--rate", default="40m", help="nginx limit_rate per connection (40m = 40 MiB/s)")
    p.add_argument("--only", default=",".join(CONTENDERS), help="contenders, comma-separated")
    p.add_argument("--raw-variant", action="append", default=[], metavar="KEY=VALUE,...",
                   help="also run raw aria2c (defaults) with these options, e.g. disk-cache=0 (repeatable)")
    p.add_argument("--project-variant", action="append", default=[], metavar="KEY=VALUE,...",
                   help="also run raw aria2c with the project's options and these on top (repeatable)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    p.add_argument("--keep-log", type=Path, help="also write every run's record (JSON lines) here")
    a = p.parse_args()
    kinds = [k for k in a.only.split(",") if k]
    kinds += [add_variant("raw", v) for v in a.raw_variant] + [add_variant("raw-project", v) for v in a.project_variant]
    unknown = set(kinds) - set(CONTENDERS)
    if unknown or "ours" not in kinds:
        sys.exit(f"--only: choose among {', '.join(CONTENDERS)} (ours included); unknown: {sorted(unknown)}")
    exe = nginx_binary()
    nginx_version = subprocess.run([exe, "-v"], capture_output=True, text=True, check=False).stderr.strip()
    tmp = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    runs: list[dict[str, Any]] = []
    try:
        (tmp / "www").mkdir()
        size = a.size_mib * MiB
        sha256 = make_file(tmp / "www" / NAME, size)
        with Nginx(exe, tmp / "nginx", tmp / "www", a.rate) as nginx:
            for n in range(a.rounds):
                order = kinds[n % len(kinds):] + kinds[: n % len(kinds)]
                for kind in order:
                    rec = one_run(kind, a, nginx, tmp, sha256, size)
                    rec["round"] = n
                    runs.append(rec)
                    print(f"round {n + 1}/{a.rounds} {kind}: {rec['elapsed']:.2f} s", flush=True)
                    if a.keep_log:
                        with open(a.keep_log, "a") as fh:
                            fh.write(json.dumps(rec) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = render(a, runs, nginx_version)
    print(text)
    write_sections(a.out, {SECTION: text})


if __name__ == "__main__":
    main()
