"""API latency on a fleet (issue #12): pod B's API while pod A writes to the shared state database.

A real MooseFS (tests/moosefs.py) holds the workspace, mounted twice; nginx (bench_nginx.Nginx, `limit_rate` per
connection) is the CDN, slow enough that a download lasts about a minute. Two phases:
- `fleet`: pod A (`downloader serve` on mount A, bench/fleet_pods.py) is asked for a preset of as many files as
  its slots (DOWNLOADER_MAX_CONCURRENT), so it takes them all; once both are downloading on pod A, pod B starts on
  mount B (it would otherwise claim files from the shared queue) and the client polls pod B while A writes its
  progress to the shared database;
- `local`: one pod with its workspace on the local disk, polled the same way while it downloads the same preset.
The client (a thread of this process) sends `GET /api/downloads` and `GET /downloads/live` (the page's fragment,
with the page's `HX-Request` header) alternately, one after the other on one keep-alive connection with Bearer
auth, one every `--every` s (at once when the previous was late), until the pod's own answer shows every file
verified. Each request's latency is kept; the state database's events say what the pods did around a slow one.

    .venv/bin/python bench/bench_fleet_api.py          # full: 2 x 256 MiB at 1 MiB/s per connection (~3 min);
                                                       # writes its subsection under the Fleet section
    .venv/bin/python bench/bench_fleet_api.py --quick  # smoke run: 2 x 8 MiB (~1 min); prints only

Needs root (MooseFS, network namespaces, FUSE), Debian's moosefs packages and nginx-light, as bench_fleet.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_fleet import parse_size
from bench_nginx import Nginx, make_file, nginx_binary
from fleet_pods import Pod, PodConfig, wait_until

from tests.moosefs import moosefs_unavailable, running_moosefs

FLEET_SECTION = "## Fleet: one pod vs two pods on one MooseFS volume, and a dead pod's file taken over"
HEADING = "### API latency while another pod writes (issue #12)"
PATHS = ("/api/downloads", "/downloads/live")
MiB = 1 << 20
SLOW = 1.0  # the promise: answers within a second
LOAD_START = "/".join(f"{x:.2f}" for x in os.getloadavg())


class Client:
    """Sequential GETs on one keep-alive connection with the fleet's password, each one timed."""

    def __init__(self, port: int, password: str) -> None:
        self.port, self.password = port, password
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str) -> tuple[dict[str, Any], bytes]:
        """One request: its record (start time, path, seconds, status, bytes) and the body; status 0 = failed."""
        headers = {"Authorization": f"Bearer {self.password}"}
        if path == "/downloads/live":
            headers["HX-Request"] = "true"  # as the page's script asks for it
        at, t0 = time.time(), time.perf_counter()
        try:
            self.conn.request("GET", path, headers=headers)
            res = self.conn.getresponse()
            body, status = res.read(), res.status
        except (OSError, http.client.HTTPException) as e:
            self.conn.close()  # the next request opens a new connection
            body, status = repr(e).encode(), 0
        return {"at": at, "path": path, "s": time.perf_counter() - t0, "status": status, "bytes": len(body)}, body

    def close(self) -> None:
        self.conn.close()


def poll(pod: Pod, password: str, ids: list[str], every: float, timeout: float) -> dict[str, Any]:
    """Poll `pod` until its /api/downloads shows every file of `ids` verified; the requests and the progress seen."""
    client = Client(pod.port, password)
    samples: list[dict[str, Any]] = []
    progress: list[tuple[float, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    due = time.monotonic()
    try:
        for n in range(10**9):
            sample, body = client.get(PATHS[n % 2])
            samples.append(sample)
            if sample["path"] == "/api/downloads" and sample["status"] == 200:
                rows = {d["id"]: d for d in json.loads(body)["downloads"]}
                progress.append((sample["at"], {i: [rows[i]["state"], rows[i]["bytes_done"], rows[i]["pod"]]
                                                for i in ids}))
                bad = [rows[i] for i in ids if rows[i]["state"] in ("failed", "cancelled", "paused")]
                if bad:
                    raise RuntimeError(f"a file did not download: {bad}")
                if all(rows[i]["state"] == "done" and rows[i]["verified"] for i in ids):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the files were not verified within {timeout:.0f} s")
            due = max(due + every, time.monotonic())  # a late request is not made up for with a burst
            time.sleep(max(0.0, due - time.monotonic()))
    finally:
        client.close()
    return {"samples": samples, "progress": progress}


def events(db: Path, ids: list[str]) -> list[tuple[float, str, str]]:
    """(time, file, message) of the files' history in the shared database, oldest first."""
    from downloader.state import Store

    out = []
    with Store(db) as store:
        for i in ids:
            out += [(e.at.replace(tzinfo=dt.timezone.utc).timestamp(), i, e.message) for e in store.events(i, 1000)]
    return sorted(out)


class Bench:
    """The session: the CDN, the preset's files, the settings every pod gets, the phases' records."""

    def __init__(self, a: argparse.Namespace, nginx: Nginx, tmp: Path, files: dict[str, tuple[int, str]]) -> None:
        self.a, self.nginx, self.tmp, self.files = a, nginx, tmp, files
        self.password = secrets.token_urlsafe(18)
        self.ids = [name.split(".")[0] for name in files]
        self.config = PodConfig(a.connections, a.min_split, a.max_concurrent, 20.0, self.password)

    def workspace(self, ws: Path) -> Path:
        """A manifest of the files with a preset `bench` of all of them, in workspace `ws`."""
        (ws / "manifests").mkdir(parents=True)
        lines = ["presets:", f"  bench: [{', '.join(self.ids)}]", "models:"]
        for name, (size, sha256) in self.files.items():
            lines += [f"  - id: {name.split('.')[0]}", f"    source: http://127.0.0.1:{self.nginx.port}/{name}",
                      f"    dest: bench/{name}", f"    sha256: {sha256}", f"    size: {size}"]
        (ws / "manifests" / "bench.yaml").write_text("\n".join(lines) + "\n")
        return ws

    def timeout(self) -> float:
        """Ten times what the CDN's cap allows for one file (all files go at once), at least two minutes."""
        size = self.a.size_mib * MiB
        parts = min(self.a.connections, max(1, size // int(parse_size(self.a.min_split))))
        return max(120.0, 10 * size / (parts * parse_size(self.a.rate)))

    def all_downloading(self, pod: Pod, name: str) -> bool:
        rows = pod.downloads()
        return all(rows[i]["state"] == "downloading" and rows[i]["pod"] == name for i in self.ids)

    def run(self, kind: str, writer_ws: Path, reader_ws: Path | None) -> dict[str, Any]:
        """Pod A on `writer_ws` downloads the preset; the client polls pod B on `reader_ws`, or pod A itself."""
        self.workspace(writer_ws)
        logs = {"pod-a": self.tmp / f"{kind}-pod-a.log", "pod-b": self.tmp / f"{kind}-pod-b.log"}
        with ExitStack() as stack:
            writer = stack.enter_context(Pod("pod-a", writer_ws, self.config, logs["pod-a"]))
            writer.wait_ready()
            writer.start_preset("bench")
            wait_until(lambda: self.all_downloading(writer, "pod-a"), "pod A downloading every file", 120)
            polled = writer
            if reader_ws is not None:
                polled = stack.enter_context(Pod("pod-b", reader_ws, self.config, logs["pod-b"]))
                polled.wait_ready()
            load = os.getloadavg()[0]
            rec = poll(polled, self.password, self.ids, self.a.every, self.timeout())
        rec.update(kind=kind, load=[load, os.getloadavg()[0]], events=events(writer_ws / ".downloader" / "state.db", self.ids))
        rec["log_warnings"] = {name: [line for line in path.read_text(errors="replace").splitlines()
                                      if "WARNING" in line or "ERROR" in line or "locked" in line][:20]
                               for name, path in logs.items() if path.exists()}
        shutil.rmtree(writer_ws, ignore_errors=True)
        return rec


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def stats_cells(samples: list[dict[str, Any]]) -> str:
    s = [x["s"] for x in samples]
    ok = sum(x["s"] <= SLOW and x["status"] == 200 for x in samples)
    return (f"{len(s)} | {1000 * pct(s, 50):.1f} | {1000 * pct(s, 95):.1f} | {1000 * pct(s, 99):.1f} | "
            f"{1000 * max(s):.0f} | {100 * ok / len(s):.2f}%")


def slow_ones(rec: dict[str, Any], limit: int = 10) -> list[str]:
    """Each request over SLOW s (at most `limit`): when, how long, and what the pods' history says near it."""
    out = []
    t0 = rec["samples"][0]["at"]
    for x in [x for x in rec["samples"] if x["s"] > SLOW or x["status"] != 200][:limit]:
        near = [f"{t - x['at']:+.1f} s {i}: {m}" for t, i, m in rec["events"] if x["at"] - 2 <= t <= x["at"] + x["s"] + 2]
        out.append(f"{x['path']} at +{x['at'] - t0:.1f} s took {x['s']:.2f} s (status {x['status']}); "
                   f"events nearby: {'; '.join(near) or 'none'}")
    return out


def render(a: argparse.Namespace, recs: list[dict[str, Any]], versions: dict[str, str]) -> str:
    """The subsection."""
    who = {"fleet": "pod B (MooseFS, mount B) while pod A (mount A) downloads",
           "local": "one pod (local disk) while it downloads itself"}
    lines = [
        HEADING, "",
        (f"- date: {versions['date']}; machine: {os.cpu_count()} cores, kernel {platform.release()}, **shared with "
         f"other sessions** (load average at the start {versions['load_start']}, at the end {versions['load_end']})"),
        (f"- preset: {a.files} × {a.size_mib} MiB, `{versions['nginx']}` with `limit_rate {a.rate}` per connection; "
         f"each pod `DOWNLOADER_MAX_CONCURRENT={a.max_concurrent}`, `ARIA2_CONNECTIONS={a.connections}`, "
         f"`ARIA2_MIN_SPLIT_SIZE={a.min_split}`; MooseFS {versions['mfs']} as above"),
        ("- fleet: pod A is asked for the preset and takes every file (as many files as its slots); pod B starts on "
         "the other mount once pod A is downloading them (else it would take files from the shared queue) and is "
         "polled until its answer shows every file verified; local: one pod, its workspace on the local disk, "
         "polled the same way while it downloads the same preset"),
        (f"- client: this script, one request every {a.every:g} s (at once when the previous one was late), "
         f"`GET {PATHS[0]}` and `GET {PATHS[1]}` (the page's fragment, `HX-Request: true`) alternately, one after the "
         "other on one keep-alive connection, `Authorization: Bearer`"), "",
        "| polled | endpoint | window s | requests | p50 ms | p95 ms | p99 ms | max ms | within 1 s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rec in recs:
        s = rec["samples"]
        window = s[-1]["at"] + s[-1]["s"] - s[0]["at"]
        for path in PATHS:
            lines.append(f"| {who[rec['kind']]} | `{path}` | {window:.0f} | "
                         f"{stats_cells([x for x in s if x['path'] == path])} |")
    lines.append("")
    for rec in recs:
        fetchers = {m.rsplit(' on pod ', 1)[1].split()[0] for _, _, m in rec["events"] if " on pod " in m}
        slow = slow_ones(rec)
        errors = sum(x["status"] != 200 for x in rec["samples"])
        lines.append(f"- {rec['kind']}: files fetched by {', '.join(sorted(fetchers)) or '?'}; failed requests "
                     f"{errors}; load average (1 min) {rec['load'][0]:.2f} → {rec['load'][1]:.2f}; requests over 1 s: "
                     + ("none" if not slow else " / ".join(slow)))
    lines += ["", (f"Reproduce: `.venv/bin/python bench/bench_fleet_api.py --files {a.files} --size-mib {a.size_mib} "
                   f"--rate {a.rate} --connections {a.connections} --max-concurrent {a.max_concurrent} --min-split "
                   f"{a.min_split} --every {a.every:g}` (as root; what it does: the script's docstring).")]
    return "\n".join(lines) + "\n"


def write_subsection(out: Path, text: str) -> None:
    """Put `text` (starting with HEADING) at the end of the Fleet section, replacing an older one; the rest stays."""
    lines = out.read_text().splitlines()
    start = lines.index(FLEET_SECTION)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    if HEADING in lines[start:end]:
        mine = lines.index(HEADING, start)
        stop = next((i for i in range(mine + 1, end) if lines[i].startswith(("## ", "### "))), end)
        lines[mine:stop] = text.rstrip("\n").splitlines() + ([""] if stop < end else [])
    else:
        while end > start and not lines[end - 1].strip():
            end -= 1
        lines[end:end] = ["", *text.rstrip("\n").splitlines()] + ([""] if end < len(lines) else [])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 x 8 MiB at 512 KiB/s per connection")
    p.add_argument("--files", type=int, help="files in the preset (default: --max-concurrent, so pod A takes all)")
    p.add_argument("--size-mib", type=int)
    p.add_argument("--rate", help="nginx limit_rate per connection (1m = 1 MiB/s)")
    p.add_argument("--connections", type=int, help="ARIA2_CONNECTIONS")
    p.add_argument("--max-concurrent", type=int, default=2, help="DOWNLOADER_MAX_CONCURRENT")
    p.add_argument("--min-split", help="ARIA2_MIN_SPLIT_SIZE")
    p.add_argument("--every", type=float, default=0.05, help="seconds between the client's requests")
    p.add_argument("--only", default="fleet,local", help="phases: fleet, local or both")
    p.add_argument("--out", type=Path, help="where the subsection goes (docs/BENCHMARKS.md; --quick: printed only)")
    p.add_argument("--keep-log", type=Path, help="also write the records here (JSON), to render again")
    p.add_argument("--render", type=Path, metavar="LOG", help="only write the subsection from a --keep-log")
    a = p.parse_args()
    quick = {"size_mib": 8, "rate": "512k", "connections": 2, "min_split": "1M"}
    full = {"size_mib": 256, "rate": "1m", "connections": 4, "min_split": "32M"}
    for key, value in (quick if a.quick else full).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    a.files = a.files or a.max_concurrent
    if a.out is None and not a.quick:
        a.out = REPO / "docs" / "BENCHMARKS.md"
    return a


def main() -> None:
    a = parse_args()
    if a.render:
        kept = json.loads(a.render.read_text())
        text = render(a, kept["records"], kept["versions"])
    else:
        why = moosefs_unavailable()
        if why:
            sys.exit(f"cannot run MooseFS here: {why}")
        exe = nginx_binary()
        versions = {"nginx": subprocess.run([exe, "-v"], capture_output=True, text=True, check=False).stderr.strip(),
                    "mfs": subprocess.run(["mfsmaster", "-v"], capture_output=True, text=True,
                                          check=False).stdout.split()[1].split("-")[0]}
        tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-api-"))
        recs: list[dict[str, Any]] = []
        try:
            (tmp / "www").mkdir()
            files = {f"f{i}.safetensors": a.size_mib * MiB + i for i in range(a.files)}
            made = {name: (size, make_file(tmp / "www" / name, size)) for name, size in files.items()}
            with running_moosefs() as fs, Nginx(exe, tmp / "nginx", tmp / "www", a.rate) as nginx:
                b = Bench(a, nginx, tmp, made)
                for kind in ("fleet", "local"):
                    if kind not in a.only:
                        continue
                    if kind == "fleet":
                        ws = fs.folder("api-latency")
                        rec = b.run(kind, ws, fs.on_b(ws))
                    else:
                        rec = b.run(kind, tmp / "local-ws", None)
                    recs.append(rec)
                    s = [x["s"] for x in rec["samples"]]
                    print(f"{kind}: {len(s)} requests, p50 {1000 * pct(s, 50):.1f} ms, p99 {1000 * pct(s, 99):.1f} "
                          f"ms, max {1000 * max(s):.0f} ms", flush=True)
        finally:
            versions.update(date=f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}", load_start=LOAD_START,
                            load_end="/".join(f"{x:.2f}" for x in os.getloadavg()))
            if a.keep_log and recs:
                a.keep_log.write_text(json.dumps({"versions": versions, "records": recs}))
            shutil.rmtree(tmp, ignore_errors=True)
        text = render(a, recs, versions)
    print(text)
    if a.out is not None:
        write_subsection(a.out, text)


if __name__ == "__main__":
    main()
