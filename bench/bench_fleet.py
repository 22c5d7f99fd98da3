"""A fleet on one MooseFS volume (issue #12): one pod vs two pods on one preset, and a dead pod's file taken over.

A real MooseFS (tests/moosefs.py: master and chunkserver in a network namespace, the volume mounted twice: two
pods) holds the workspace; nginx (bench_nginx.Nginx, `limit_rate` per connection) is the CDN, so the CDN's
per-connection cap, not the CPU, sets the pace. A pod is `python -m downloader serve` with its own RUNPOD_POD_ID
on its own mount (bench/fleet_pods.py).

Rounds (`--rounds`, the kinds interleaved, the order rotating; a fresh folder on the volume per run):
- `one-pod`: one pod fetches the preset (`--files` x `--size-mib`);
- `two-pods`: two pods, one per mount, are both asked for the same preset at the same moment;
- `raw`: one raw aria2c (the project's options, `-j` = DOWNLOADER_MAX_CONCURRENT) fetches the same files onto the
  volume: one pod's peer;
- `raw-two`: two raw aria2c, one per mount, half of the files each (split by hand): the two pods' peer.
Timed from the moment the pods are asked (they are already up) to the last file verified in place (the pods'
own "done" events); nginx's access log gives the bytes served per file, the state database which pod fetched it.

Takeover (`--leases`, each `--rounds` times): two pods up, one preset of one `--takeover-size-mib` file; the pod
that took it is killed with SIGKILL (service and aria2c) at `--kill-at` of the file; measured until the other
pod is downloading it again (where it resumed: its history line) and until it is verified; bytes fetched again.

    .venv/bin/python bench/bench_fleet.py            # full: 4 x 256 MiB, 3 rounds, leases 20 and 5 (~11 min);
                                                     # writes its section of docs/BENCHMARKS.md
    .venv/bin/python bench/bench_fleet.py --quick    # smoke run: tiny files, 1 round (~1.5 min); prints only
    .venv/bin/python bench/bench_fleet.py --keep-log /tmp/f.jsonl ...   # every run's record, to render again:
    .venv/bin/python bench/bench_fleet.py --render /tmp/f.jsonl         # (with the same options as the run)

Needs root (MooseFS, network namespaces, FUSE) and Debian's moosefs-master, moosefs-chunkserver, moosefs-client and
nginx-light; everything runs on this host. Tiny files (--quick) do not measure the fleet: nginx's burst at the start
of each request outweighs its cap there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_download import DAEMON_ONLY, write_sections
from bench_nginx import ARIA2C, Nginx, make_file, nginx_binary
from fleet_pods import Pod, PodConfig, history, wait_until

from tests.moosefs import MooseFS, moosefs_unavailable, running_moosefs

SECTION = "## Fleet: one pod vs two pods on one MooseFS volume, and a dead pod's file taken over"
MB, MiB = 1e6, 1 << 20
LOAD_START = "/".join(f"{x:.2f}" for x in os.getloadavg())  # when this process started
KINDS = ("one-pod", "two-pods", "raw", "raw-two")
LABELS = {
    "one-pod": "one pod (`downloader serve`)",
    "two-pods": "two pods, one per mount, same preset",
    "raw": "raw aria2c, one process (one pod's peer)",
    "raw-two": "raw aria2c, two processes, one per mount, half of the files each (two pods' peer)",
}


class Bench:
    """One benchmark session: the volume, the CDN, the files, and the runs' records."""

    def __init__(self, a: argparse.Namespace, fs: MooseFS, nginx: Nginx, tmp: Path,
                 files: dict[str, tuple[int, str]]) -> None:
        self.a, self.fs, self.nginx, self.tmp, self.files = a, fs, nginx, tmp, files
        self.password = secrets.token_urlsafe(18)
        self.runs: list[dict[str, Any]] = []

    def config(self, lease: float) -> PodConfig:
        return PodConfig(self.a.connections, self.a.min_split, self.a.max_concurrent, lease, self.password)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.nginx.port}/{name}"

    def workspace(self, label: str) -> Path:
        """A fresh folder on the volume (by mount A) with a manifest of every file, a preset per group."""
        ws = self.fs.folder(label)
        (ws / "manifests").mkdir()
        preset_files = [n for n in self.files if n.startswith("f")]
        lines = ["presets:", f"  bench: [{', '.join(m.split('.')[0] for m in preset_files)}]",
                 "  big: [big]", "models:"]
        for name, (size, sha256) in self.files.items():
            lines += [f"  - id: {name.split('.')[0]}", f"    source: {self.url(name)}",
                      f"    dest: bench/{name}", f"    sha256: {sha256}", f"    size: {size}"]
        (ws / "manifests" / "bench.yaml").write_text("\n".join(lines) + "\n")
        return ws

    def pods(self, stack: ExitStack, ws: Path, count: int, lease: float, label: str) -> list[Pod]:
        """`count` pods (pod-a on mount A, pod-b on mount B), started side by side, ready."""
        where = [ws, self.fs.on_b(ws)]
        pods = [Pod(f"pod-{'ab'[i]}", where[i], self.config(lease), self.tmp / f"{label}-pod-{'ab'[i]}.log")
                for i in range(count)]
        for p in pods:
            stack.enter_context(p)
        for p in pods:
            p.wait_ready()
        return pods

    # --- the preset: one pod, two pods ------------------------------------------------------------------
    def run_pods(self, count: int, n: int) -> dict[str, Any]:
        label = f"r{n}-{count}pods"
        ws = self.workspace(label)
        ids = [m.split(".")[0] for m in self.files if m.startswith("f")]
        with ExitStack() as stack:
            pods = self.pods(stack, ws, count, self.a.lease, label)
            offset = self.nginx.log_offset()
            t0 = time.time()
            # Both pods asked at once, as pods started with the same MODEL_PRESETS queue it at their start.
            askers = [threading.Thread(target=p.start_preset, args=("bench",)) for p in pods]
            for t in askers:
                t.start()
            for t in askers:
                t.join()

            def all_verified() -> bool:
                rows = pods[0].downloads()
                bad = [r for r in rows.values() if r["state"] in ("failed", "cancelled", "paused")]
                if bad:
                    raise RuntimeError(f"{label}: {bad}")
                return all(rows[i]["state"] == "done" and rows[i]["verified"] for i in ids)

            wait_until(all_verified, f"{label}: every file verified", self.timeout(count), every=0.25)
            t_api = time.time()
        files = history(ws / ".downloader" / "state.db", ids)
        rec = self.served(offset, {"kind": "one-pod" if count == 1 else "two-pods", "round": n, "t0": t0,
                                   "api_done": t_api - t0})
        ends = [h.done for h in files.values()]
        if None in ends:
            raise RuntimeError(f"{label}: a file has no done event: {files}")
        rec["elapsed"] = max(e for e in ends if e is not None) - t0
        rec["fetchers"] = {i: h.fetchers for i, h in files.items()}
        shutil.rmtree(ws, ignore_errors=True)
        return rec

    def timeout(self, pods: int) -> float:
        """Ten times what the CDN's cap allows, at least two minutes (a busy machine is slow, not broken)."""
        return max(120.0, 10 * self.cdn_bound(self.a.max_concurrent * pods))

    def takeover_timeout(self, size: int) -> float:
        """Ten times what the CDN's cap allows for one file of `size`, at least two minutes."""
        return max(120.0, 10 * self.file_seconds(size))

    def file_seconds(self, size: float) -> float:
        """Seconds one file of `size` takes at the CDN's cap, on as many connections as aria2 splits it into."""
        per_file = min(self.a.connections, max(1, int(size) // self.min_split_bytes()))
        return size / (per_file * self.rate_bytes())

    def cdn_bound(self, slots: int) -> float:
        """Seconds the preset takes at the CDN's cap with `slots` files on the wire at once, each on
        `--connections` connections (the file split in as many parts), ignoring the tail of the last part."""
        waves = -(-self.a.files // slots)
        return waves * self.file_seconds(self.a.size_mib * MiB)

    def rate_bytes(self) -> float:
        return parse_size(self.a.rate)

    def min_split_bytes(self) -> int:
        return int(parse_size(self.a.min_split))

    # --- raw aria2c --------------------------------------------------------------------------------------
    def raw_options(self, directory: Path) -> dict[str, str]:
        """The project's aria2 options (read from its code) for a command line, with this run's settings."""
        from downloader.aria2 import Aria2Daemon
        from downloader.config import Settings

        s = Settings(workspace=directory, models_dir=directory, state_dir=directory, manifest_dirs=(),
                     connections=self.a.connections, min_split_size=self.a.min_split,
                     max_concurrent=self.a.max_concurrent)
        daemon = Aria2Daemon(s)
        daemon.log_path = directory / "aria2.log"
        options = {k: v for k, v in daemon._options(0, "").items() if k not in DAEMON_ONLY and k != "log"}
        options["max-concurrent-downloads"] = str(self.a.max_concurrent)  # as the pod's manager allows
        return options

    def run_raw(self, processes: int, n: int) -> dict[str, Any]:
        label = f"r{n}-raw{processes}"
        ws = self.workspace(label)
        names = [m for m in self.files if m.startswith("f")]
        where = [ws, self.fs.on_b(ws)]
        procs: list[subprocess.Popen[bytes]] = []
        offset = self.nginx.log_offset()
        t0 = time.time()
        try:
            for i in range(processes):
                mine = names[i::processes]
                listing = self.tmp / f"{label}-{i}.txt"
                listing.write_text("".join(f"{self.url(m)}\n  out={m}\n" for m in mine))
                cmd = [ARIA2C, *(f"--{k}={v}" for k, v in self.raw_options(where[i]).items()),
                       f"--dir={where[i]}", f"--input-file={listing}"]
                procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
            outputs = [p.communicate(timeout=self.timeout(processes))[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        t_end = time.time()
        for p, out in zip(procs, outputs):
            if p.returncode != 0:
                raise RuntimeError(f"{label}: aria2c exited {p.returncode}:\n{out.decode(errors='replace')[-2000:]}")
        for name in names:
            got = (ws / name).stat().st_size
            if got != self.files[name][0]:
                raise RuntimeError(f"{label}: {name} is {got} bytes, not {self.files[name][0]}")
        rec = self.served(offset, {"kind": "raw" if processes == 1 else "raw-two", "round": n, "t0": t0,
                                   "elapsed": t_end - t0})
        shutil.rmtree(ws, ignore_errors=True)
        return rec

    def served(self, offset: int, rec: dict[str, Any]) -> dict[str, Any]:
        """Add what nginx served since `offset`: GETs, HEADs, bytes per file and in all."""
        time.sleep(0.3)  # nginx writes a request's line when it ends
        reqs = self.nginx.requests_since(offset)
        per_file: dict[str, int] = {}
        for r in reqs:
            per_file[r["uri"].lstrip("/")] = per_file.get(r["uri"].lstrip("/"), 0) + r["sent"]
        rec.update(gets=sum(r["method"] == "GET" for r in reqs), heads=sum(r["method"] == "HEAD" for r in reqs),
                   sent=sum(r["sent"] for r in reqs), per_file=per_file, requests=reqs)
        return rec

    # --- takeover ----------------------------------------------------------------------------------------
    def run_takeover(self, lease: float, n: int) -> dict[str, Any]:
        label = f"r{n}-takeover-{lease:g}"
        ws = self.workspace(label)
        size = self.files["big.safetensors"][0]
        part = ws / "ComfyUI" / "models" / "bench" / "big.safetensors.part"
        with ExitStack() as stack:
            pods = self.pods(stack, ws, 2, lease, label)
            offset = self.nginx.log_offset()
            t0 = time.time()
            pods[0].start_preset("big")

            def midway() -> dict[str, Any] | None:
                row = pods[0].downloads()["big"]
                ok = (row["state"] == "downloading" and row["pod"] and row["bytes_done"] >= self.a.kill_at * size
                      and part.with_name(part.name + ".aria2").exists())
                return row if ok else None

            row = wait_until(midway, f"{label}: a pod mid-way through the file", self.takeover_timeout(size), every=0.1)
            victim = next(p for p in pods if p.name == row["pod"])
            survivor = next(p for p in pods if p is not victim)
            t_kill = victim.kill9()
            at_kill = row["bytes_done"]
            seen: dict[str, Any] = {}

            def survivor_state() -> bool:
                r = survivor.downloads()["big"]
                if "downloading" not in seen and r["state"] == "downloading" and r["pod"] == survivor.name:
                    seen["downloading"] = (time.time(), r["bytes_done"])
                if r["state"] in ("failed", "cancelled"):
                    raise RuntimeError(f"{label}: {r}")
                return r["state"] == "done" and r["verified"]

            wait_until(survivor_state, f"{label}: {survivor.name} to finish the file",
                       self.takeover_timeout(size) + 2 * lease, every=0.1)
        [h] = history(ws / ".downloader" / "state.db", ["big"]).values()
        rec = self.served(offset, {"kind": "takeover", "lease": lease, "round": n, "t0": t0, "t_kill": t_kill,
                                   "victim": victim.name, "survivor": survivor.name, "size": size,
                                   "at_kill_api": at_kill, "fetchers": h.fetchers})
        resumed = [(t, m) for t, m in h.started if t > t_kill]
        if not resumed or h.done is None or not h.requeued:
            raise RuntimeError(f"{label}: no takeover in the history: {h}")
        rec["requeued_after"] = h.requeued[-1] - t_kill
        rec["downloading_after"] = resumed[0][0] - t_kill
        rec["resume_message"] = resumed[0][1]
        rec["done_after"] = h.done - t_kill
        if "downloading" in seen:
            rec["api_downloading_after"] = seen["downloading"][0] - t_kill
            rec["api_resumed_bytes"] = seen["downloading"][1]
        after = [r for r in rec["requests"] if r["start"] > t_kill]
        rec["first_get_after"] = min((r["start"] for r in after if r["method"] == "GET"), default=float("nan")) - t_kill
        rec["sent_after_kill"] = sum(r["sent"] for r in after)
        rec["sent_before_kill"] = rec["sent"] - rec["sent_after_kill"]
        shutil.rmtree(ws, ignore_errors=True)
        return rec


def now_text() -> str:
    return dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def resume_point(message: str) -> str:
    """`downloading (resuming at 244.0 MiB) on pod b` -> `244.0 MiB`; `from 0` when it started over."""
    if "resuming at " not in message:
        return "from 0"
    return message.split("resuming at ", 1)[1].split(")", 1)[0]


def parse_size(text: str) -> float:
    """`40m`, `32M`, `1k`, `1048576` -> bytes (nginx's and aria2's suffixes are binary)."""
    text = text.strip()
    unit = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1].lower(), 1)
    return float(text[:-1] if unit != 1 else text) * unit


# --- the report -------------------------------------------------------------------------------------------
def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_list(values: list[float], digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def per_round_ratios(runs: list[dict[str, Any]], top: str, bottom: str) -> list[float]:
    out = []
    for n in sorted({r["round"] for r in runs}):
        a = [r for r in runs if r["kind"] == top and r["round"] == n]
        b = [r for r in runs if r["kind"] == bottom and r["round"] == n]
        if a and b:
            out.append(a[0]["elapsed"] / b[0]["elapsed"])
    return out


def load_now() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def overshoot(b: Bench, runs: list[dict[str, Any]], kind: str) -> float:
    """Median MB per file that nginx sent beyond the preset's size in the runs of `kind`."""
    total = sum(size for name, (size, _) in b.files.items() if name.startswith("f"))
    return med([(r["sent"] - total) / b.a.files / MB for r in runs if r["kind"] == kind])


def render(b: Bench, mfs_version: str, nginx_version: str, ended: dict[str, str] | None = None) -> str:
    """The section; `ended` (date, load_end, load_start) from a kept log when rendering again later."""
    a, runs = b.a, b.runs
    total = sum(size for name, (size, _) in b.files.items() if name.startswith("f"))
    aria2v = subprocess.run([ARIA2C, "--version"], capture_output=True, text=True, check=False).stdout.split()[2]
    slots_one = a.max_concurrent
    when = ended or {"date": now_text(), "load_start": LOAD_START, "load_end": load_now()}
    lines = [
        SECTION, "",
        (f"- date: {when['date']}; machine: {os.cpu_count()} cores, "
         f"kernel {platform.release()}, **shared with other sessions** (load average at the start {when['load_start']}, "
         f"at the end {when['load_end']}): absolute times are noisy; the ratios come from "
         "interleaved rounds"),
        (f"- volume: MooseFS {mfs_version} (tests/moosefs.py: master and chunkserver in a network namespace on this "
         "host, chunks on the local disk, mounted twice: pod A on one mount, pod B on the other)"),
        (f"- preset: {a.files} × {a.size_mib} MiB of random bytes (sha256 and size pinned in the manifest), served by "
         f"`{nginx_version}` on 127.0.0.1 with `limit_rate {a.rate}` per connection; aria2c {aria2v}"),
        (f"- each pod: `DOWNLOADER_MAX_CONCURRENT={a.max_concurrent}`, `ARIA2_CONNECTIONS={a.connections}`, "
         f"`ARIA2_MIN_SPLIT_SIZE={a.min_split}`, `DOWNLOADER_CLAIM_LEASE={a.lease:g}` (rounds) — so one pod has "
         f"{slots_one} files × {a.connections} connections on the wire, two pods twice that; the raw aria2c runs get "
         f"the project's aria2 options with `-j {a.max_concurrent}` per process"),
        (f"- why these settings: nginx caps each connection, not the CDN as a whole, so more connections at once "
         f"fetch faster, as on a real CDN. Every pod gets the same settings, so two pods have twice one pod's "
         f"connections: the fleet's gain is that, and files not waiting for a free slot. {a.files} files with "
         f"{a.max_concurrent} slots per pod: one pod fetches them in {-(-a.files // a.max_concurrent)} wave(s), two "
         f"pods in {-(-a.files // (2 * a.max_concurrent))} (with no more files than one pod's slots, the second pod "
         f"would find nothing to do). {a.connections} connections with `min-split-size` {a.min_split}: each "
         f"{a.size_mib} MiB file goes in {min(a.connections, max(1, a.size_mib * MiB // b.min_split_bytes()))} "
         "parts, each one long request at the cap, the same count in every run (the default 16 would give "
         "`size / min-split-size` parts and more connections for nginx's per-request start-up burst to blur). "
         f"{a.rate} per connection keeps the total ({b.rate_bytes() * a.max_concurrent * a.connections / MiB:.0f} "
         f"MiB/s for one pod, twice that for two) low enough that the 2 shared cores (aria2c, the FUSE mounts, the "
         "chunkserver, sha256) should not be the limit: the raw rows check it (two aria2c / one aria2c near "
         f"{-(-a.files // (2 * a.max_concurrent)) / -(-a.files // a.max_concurrent):.2f} = the CDN sets the pace)"),
        (f"- rounds: {a.rounds}, each running every kind once, the order rotating; a fresh folder on the volume per "
         "run; the pods are up before the clock starts (start-up is not timed: see \"Start-up\" above); timed from "
         "asking the pods (`POST /api/presets/bench/start`, to both at once) to the last file's `done` event (sha256 "
         "checked, file in place), raw aria2c from spawn to exit (download only, no hash)"), "",
        "| run | median s | median MB/s | CDN cap s | all runs (s) | GETs | served / preset | files per pod |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    caps = {"one-pod": b.cdn_bound(slots_one), "two-pods": b.cdn_bound(2 * slots_one),
            "raw": b.cdn_bound(slots_one), "raw-two": b.cdn_bound(2 * slots_one)}
    for kind in KINDS:
        rs = [r for r in runs if r["kind"] == kind]
        if not rs:
            continue
        times = [r["elapsed"] for r in rs]
        served = med([r["sent"] / total for r in rs])
        pods_cell = "–"
        if kind in ("one-pod", "two-pods"):
            counts = []
            for r in rs:
                by_pod: dict[str, int] = {}
                for fetchers in r["fetchers"].values():
                    for p in set(fetchers):
                        by_pod[p] = by_pod.get(p, 0) + 1
                counts.append(" + ".join(f"{v}" for _, v in sorted(by_pod.items())))
            pods_cell = "; ".join(counts)
        lines.append(f"| {LABELS[kind]} | {med(times):.2f} | {total / med(times) / MB:.0f} | {caps[kind]:.1f} | "
                     f"{fmt_list(times)} | {med([r['gets'] for r in rs]):.0f} | {served:.4f} | {pods_cell} |")
    once = all(len(set(f)) == 1 for r in runs if r["kind"] in ("one-pod", "two-pods") for f in r["fetchers"].values())
    lines += ["", "Ratios within each round (time / time: below 1 = the first is faster):", ""]
    for top, bottom, what in (("two-pods", "one-pod", "two pods / one pod"),
                              ("raw-two", "raw", "raw: two aria2c / one aria2c (what the CDN's cap allows)"),
                              ("one-pod", "raw", "one pod / raw aria2c"),
                              ("two-pods", "raw-two", "two pods / two raw aria2c")):
        ratios = per_round_ratios(runs, top, bottom)
        if ratios:
            lines.append(f"- {what}: median **{med(ratios):.2f}** (rounds: {fmt_list(ratios)})")
    api_lag = [r["api_done"] - r["elapsed"] for r in runs if "api_done" in r]
    preset = [r for r in runs if r["kind"] in KINDS]
    sizes = {name: size for name, (size, _) in b.files.items()}
    most = max((sent / sizes[name] for r in preset for name, sent in r["per_file"].items()), default=float("nan"))
    lines += ["", (f"Every file fetched by exactly one pod: **{'yes' if once else 'NO'}** (the state database's "
                   "history: one pod started each file). \"served / preset\": bytes nginx sent (headers included) over "
                   f"the preset's {total / MB:.0f} MB; the API (polled every 0.25 s) showed all files verified "
                   f"{med(api_lag):.2f} s (median) after the last `done` event. Sent beyond the preset, per file: "
                   f"{overshoot(b, runs, 'one-pod'):.1f} MB for one pod, {overshoot(b, runs, 'raw'):.1f} MB for raw "
                   f"aria2c, {overshoot(b, runs, 'two-pods'):.1f} MB for two pods (medians): aria2 asks for open-ended "
                   "ranges and closes a connection when its part is done, after nginx has sent a little more. No file "
                   f"was sent twice: the most any file was sent in a run is {most:.3f} × its size.")]
    takeovers = [r for r in runs if r["kind"] == "takeover"]
    if takeovers:
        size = takeovers[0]["size"]
        lines += ["", (f"**Takeover**: two pods up, a preset of one {size / MiB:.0f} MiB file; the pod that took it "
                       f"is killed with SIGKILL (service and aria2c) once {a.kill_at:.0%} of it is downloaded; "
                       f"{a.rounds} run(s) per lease, interleaved. Times from the kill (medians; all runs in brackets):"),
                  "", ("| lease s | expected requeue s | → requeued s | → other pod downloading s | → its first GET s "
                       "| → verified s | at the kill MB | other pod fetched MB | fetched again MB | its event says |"),
                  "| ---: | ---: | --- | --- | --- | --- | ---: | ---: | ---: | --- |"]
        for lease in a.leases:
            rs = [r for r in takeovers if r["lease"] == lease]
            if not rs:
                continue

            def cell(key: str, rs: list[dict[str, Any]] = rs) -> str:
                vals = [r[key] for r in rs if key in r]
                return f"{med(vals):.1f} ({fmt_list(vals, 1)})" if vals else "–"

            lines.append(
                f"| {lease:g} | {0.75 * lease:.1f}–{1.25 * lease:.1f} | {cell('requeued_after')} | "
                f"{cell('downloading_after')} | {cell('first_get_after')} | {cell('done_after')} | "
                f"{med([r['at_kill_api'] / MB for r in rs]):.0f} | "
                f"{med([r['sent_after_kill'] / MB for r in rs]):.0f} | "
                f"{med([(r['sent'] - size) / MB for r in rs]):.1f} | "
                f"{'; '.join(resume_point(r['resume_message']) for r in rs)} |")
        rest = b.file_seconds(size) * (1 - a.kill_at)
        lines += ["", ("\"expected requeue\": a pod renews its claims every lease / 4, so the dead pod's claim ends "
                       "between 0.75 and 1 lease after the kill, and the other pod looks for expired claims every "
                       "lease / 4. \"at the kill\": the file's `bytes_done` in the API when the pod was killed; \"other "
                       "pod fetched\": bytes nginx sent after the kill; \"fetched again\": bytes nginx sent in all "
                       "minus the file's size (aria2 saves its control file every second; one second of this file at the "
                       f"cap is {size / b.file_seconds(size) / MB:.1f} MB; without a kill aria2 overshoots by "
                       f"{overshoot(b, runs, 'one-pod'):.1f} MB per file, above); \"its event says\": the other pod's history line (`downloading (resuming "
                       "at ...)`), which gives the `.part` file's length — ahead of the completed prefix, since "
                       f"{a.connections} connections write side by side; aria2 resumes from its control file. At the "
                       f"CDN's cap the rest of the file takes {rest:.1f} s.")]
    lines += ["", (f"Reproduce: `.venv/bin/python bench/bench_fleet.py{' --quick' if a.quick else ''} --files {a.files} "
                   f"--size-mib {a.size_mib} --rate {a.rate} --connections {a.connections} --max-concurrent "
                   f"{a.max_concurrent} --min-split {a.min_split} --rounds {a.rounds} --takeover-size-mib "
                   f"{a.takeover_size_mib} --leases {','.join(f'{x:g}' for x in a.leases)}` (as root: MooseFS, "
                   "network namespaces; what it does: the script's docstring).")]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 4 x 8 MiB, 1 round, 1 MiB/s per connection")
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--size-mib", type=int)
    p.add_argument("--rate", help="nginx limit_rate per connection (4m = 4 MiB/s)")
    p.add_argument("--connections", type=int, help="ARIA2_CONNECTIONS per pod (and raw aria2c -x/-s)")
    p.add_argument("--max-concurrent", type=int, default=2, help="DOWNLOADER_MAX_CONCURRENT per pod (raw: -j)")
    p.add_argument("--min-split", help="ARIA2_MIN_SPLIT_SIZE")
    p.add_argument("--lease", type=float, default=20.0, help="DOWNLOADER_CLAIM_LEASE in the preset rounds")
    p.add_argument("--leases", help="leases of the takeover runs, comma-separated (20,5)")
    p.add_argument("--takeover-size-mib", type=int)
    p.add_argument("--kill-at", type=float, default=0.4, help="fraction of the file downloaded at the kill")
    p.add_argument("--rounds", type=int)
    p.add_argument("--only", default="rounds,takeover", help="rounds, takeover or both")
    p.add_argument("--out", type=Path, help="where the section goes (docs/BENCHMARKS.md; --quick: printed only)")
    p.add_argument("--keep-log", type=Path, help="also write every run's record here (JSON lines)")
    p.add_argument("--render", type=Path, metavar="LOG", help="only write the section from a --keep-log (same options)")
    a = p.parse_args()
    quick = {"size_mib": 8, "rate": "1m", "connections": 2, "min_split": "1M", "rounds": 1,
             "takeover_size_mib": 16, "leases": "5,2"}
    full = {"size_mib": 256, "rate": "4m", "connections": 4, "min_split": "32M", "rounds": 3,
            "takeover_size_mib": 512, "leases": "20,5"}
    for key, value in (quick if a.quick else full).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    a.leases = [float(x) for x in str(a.leases).split(",") if x]
    if a.out is None and not a.quick:
        a.out = REPO / "docs" / "BENCHMARKS.md"
    if not all(1 <= x <= 30 for x in a.leases + [a.lease]):
        p.error("a lease is 1-30 s (DOWNLOADER_CLAIM_LEASE)")
    return a


def rerender(a: argparse.Namespace) -> None:
    """The section again from a --keep-log, without running anything."""
    lines = [json.loads(line) for line in a.render.read_text().splitlines() if line.strip()]
    meta, runs = lines[0], [r for r in lines[1:] if r["kind"] != "end"]
    end = next((r for r in lines[1:] if r["kind"] == "end"), {"date": "?", "load_end": "?"})
    b = Bench(a, None, None, a.render.parent, {k: tuple(v) for k, v in meta["files"].items()})  # type: ignore[arg-type]
    b.runs = runs
    ended = {"date": end["date"], "load_end": end["load_end"], "load_start": meta.get("load_start", "?")}
    text = render(b, meta["mfs_version"], meta["nginx_version"], ended)
    print(text)
    if a.out is not None:
        write_sections(a.out, {SECTION: text})


def main() -> None:
    a = parse_args()
    if a.render:
        rerender(a)
        return
    why = moosefs_unavailable()
    if why:
        sys.exit(f"cannot run MooseFS here: {why}")
    exe = nginx_binary()
    nginx_version = subprocess.run([exe, "-v"], capture_output=True, text=True, check=False).stderr.strip()
    mfs_version = subprocess.run(["mfsmaster", "-v"], capture_output=True, text=True,
                                 check=False).stdout.split()[1].split("-")[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    try:
        (tmp / "www").mkdir()
        files = {f"f{i}.safetensors": a.size_mib * MiB + i for i in range(a.files)}  # sizes differ: no mix-ups
        files["big.safetensors"] = a.takeover_size_mib * MiB
        made = {name: (size, make_file(tmp / "www" / name, size)) for name, size in files.items()}
        with running_moosefs() as fs, Nginx(exe, tmp / "nginx", tmp / "www", a.rate) as nginx:
            print(f"MooseFS up in {fs.startup_seconds:.1f} s ({fs.mount_a}, {fs.mount_b})", flush=True)
            b = Bench(a, fs, nginx, tmp, made)
            if a.keep_log:
                a.keep_log.write_text(json.dumps({"files": made, "mfs_version": mfs_version, "load_start": LOAD_START,
                                                  "nginx_version": nginx_version}) + "\n")
            jobs: list[tuple[str, Any]] = []
            for n in range(a.rounds):
                if "rounds" in a.only:
                    order = KINDS[n % len(KINDS):] + KINDS[: n % len(KINDS)]
                    jobs += [(k, n) for k in order]
                if "takeover" in a.only:
                    leases = a.leases[n % len(a.leases):] + a.leases[: n % len(a.leases)]
                    jobs += [(f"takeover-{x:g}", (x, n)) for x in leases]
            for kind, arg in jobs:
                if kind == "one-pod":
                    rec = b.run_pods(1, arg)
                elif kind == "two-pods":
                    rec = b.run_pods(2, arg)
                elif kind == "raw":
                    rec = b.run_raw(1, arg)
                elif kind == "raw-two":
                    rec = b.run_raw(2, arg)
                else:
                    rec = b.run_takeover(*arg)
                b.runs.append(rec)
                if a.keep_log:
                    with open(a.keep_log, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                shown = rec.get("elapsed", rec.get("done_after", 0))
                extra = (f" (lease {rec['lease']:g}: requeued +{rec['requeued_after']:.1f} s, downloading "
                         f"+{rec['downloading_after']:.1f} s, done +{rec['done_after']:.1f} s after the kill)"
                         if kind.startswith("takeover") else f": {shown:.2f} s")
                print(f"{kind} round {rec['round'] + 1}/{a.rounds}{extra}, served {rec['sent'] / MB:.1f} MB",
                      flush=True)
        text = render(b, mfs_version, nginx_version)
        if a.keep_log:
            with open(a.keep_log, "a") as fh:
                fh.write(json.dumps({"kind": "end", "date": now_text(), "load_end": load_now()}) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(text)
    if a.out is not None:
        write_sections(a.out, {SECTION: text})


if __name__ == "__main__":
    main()
