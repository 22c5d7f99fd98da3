"""A real MooseFS for the tests, mounted twice on this host as two pods see one RunPod network volume.

MooseFS's chunkserver refuses loopback addresses, so the master and the chunkserver run inside a network namespace
of their own, joined to the host by a veth pair on a private /30 (slot 0: 10.211.0.1 the host, 10.211.0.2 the
namespace); the host mounts the volume twice with `mfsmount -H <namespace address>`. No traffic leaves the host.
Configs, metadata, logs, the chunkserver's storage and the mount points live in one folder in tmp.

A session holds a slot (a file lock in /run/lock): anything left with the slot's names (a namespace, a veth, mounts,
processes, the folder) is from a run that was killed, and is removed before starting. `moosefs_unavailable()` says
why a machine cannot run it (not root, no `ip`, no /dev/fuse, no MooseFS packages): the fixture then skips.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

TOOLS = ("ip", "mfsmaster", "mfschunkserver", "mfsmount", "mfssetgoal", "mfssettrashtime")
SLOTS = 4  # concurrent test sessions on one machine (each of the engineers' pytest runs)
MASTER_PORT, CHUNKSERVER_PORT = 9421, 9422  # the master's port for clients, the chunkserver's for clients
EMPTY_METADATA = b"MFSM NEW"  # what a new master starts from (Debian ships it as metadata.mfs.empty)


class MooseFSError(RuntimeError):
    """The volume could not be started; the message has the daemons' last lines."""


class MooseFSUnavailable(MooseFSError):
    """This machine cannot run it at all (the fixture skips with this reason)."""


@dataclass
class MooseFS:
    """A running MooseFS volume and its two mounts ("pods")."""

    root: Path  # everything of this session: configs, data, logs, mount points
    mount_a: Path
    mount_b: Path
    master_ip: str
    startup_seconds: float = 0.0
    _count: list[int] = field(default_factory=lambda: [0])

    def folder(self, name: str) -> Path:
        """A new folder on the volume, by mount A (the same one is `on_b(path)` by mount B)."""
        self._count[0] += 1
        path = self.mount_a / f"{self._count[0]:03d}-{name}"[:100]
        path.mkdir()
        return path

    def on_b(self, path: Path) -> Path:
        """The same file or folder as `path` (under mount A), seen through mount B."""
        return self.mount_b / path.relative_to(self.mount_a)


def moosefs_unavailable() -> str | None:
    """Why this machine cannot run the MooseFS fixture, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, mfsmount)"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse (FUSE) on this machine"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install iproute2 moosefs-master moosefs-chunkserver " \
               "moosefs-client, or run ./test.sh)"
    return None


@dataclass(frozen=True)
class _Slot:
    number: int

    @property
    def netns(self) -> str:
        return f"pdlmfs{self.number}"

    @property
    def veth_host(self) -> str:
        return f"pdlmfs{self.number}h"

    @property
    def veth_ns(self) -> str:
        return f"pdlmfs{self.number}n"

    @property
    def host_ip(self) -> str:
        return f"10.211.0.{4 * self.number + 1}"

    @property
    def ns_ip(self) -> str:
        return f"10.211.0.{4 * self.number + 2}"

    @property
    def network(self) -> str:
        return f"10.211.0.{4 * self.number}/30"

    @property
    def root(self) -> Path:
        return Path(tempfile.gettempdir()) / f"pod-downloader-moosefs-{self.number}"

    @property
    def lock(self) -> Path:
        return Path("/run/lock") / f"pod-downloader-moosefs-{self.number}.lock"


def _run(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise MooseFSError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return res


def _wait(condition: Callable[[], bool], timeout: float, what: str, logs: tuple[Path, ...] = ()) -> None:
    """Poll `condition` until it holds; MooseFSError naming `what`, with the logs' tails, after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}:\n{_tail(p)}" for p in logs)
            raise MooseFSError(f"MooseFS: {what} not within {timeout:.0f} s\n{tails}")
        time.sleep(0.05)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _port_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def _mounts_under(root: Path) -> list[Path]:
    """Mount points at or below `root`, deepest first (from /proc/self/mountinfo; octal escapes undone)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(root) or point.startswith(f"{root}/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _pids_using(point: Path) -> list[int]:
    """Other processes with a file, a folder or their working directory under `point` (a service or an aria2c a
    test left running): they would keep the mount busy, or hang in FUSE once the master is gone."""
    inside = (str(point), f"{point}/")
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            links = [os.readlink(proc / "cwd")] + [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if any(link == inside[0] or link.startswith(inside[1]) for link in links):
            pids.append(int(proc.name))
    return pids


def _unmount(point: Path) -> None:
    """Unmount `point`, never waiting long: its users are killed first; an unmount that does not finish at once
    (its mfsmount stuck on a master that is gone) is left to the kernel, that mfsmount is killed, which ends every
    request it had, and the mount is detached lazily."""
    for pid in _pids_using(point):
        _kill(pid)
    umount = subprocess.Popen(["umount", str(point)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if umount.wait(10) == 0:
            return
    except subprocess.TimeoutExpired:
        pass  # not waited for: a process stuck in the kernel cannot be reaped until its FUSE daemon answers
    for pid in _pids_with_arg(str(point)):  # its mfsmount ("mfsmount (mounted on: <point>)") and what is left
        if pid != umount.pid:
            _kill(pid)
    _run("umount", "-l", str(point), check=False)  # busy or its daemon gone: detach it now


def _clean_slot(slot: _Slot) -> None:
    """Remove whatever a killed run of this slot left: mounts, mfsmount processes, the namespace with its daemons,
    the veth, the folder. Each step is a no-op when there is nothing to remove."""
    # The old mounts' daemons go first: an unmount waits on its mfsmount, and one whose master was killed with a
    # run that died would never answer.
    for pid in _pids_with_arg(str(slot.root)):  # mfsmount daemons of the old mounts, and anything left on them
        _kill(pid)
    for point in _mounts_under(slot.root):
        _run("umount", "-l", str(point), check=False)
    if Path(f"/run/netns/{slot.netns}").exists():
        for pid in _run("ip", "netns", "pids", slot.netns, check=False).stdout.split():
            _kill(int(pid))
        _run("ip", "netns", "del", slot.netns, check=False)
    if Path(f"/sys/class/net/{slot.veth_host}").exists():
        _run("ip", "link", "del", slot.veth_host, check=False)
    shutil.rmtree(slot.root, ignore_errors=True)


def _pids_with_arg(text: str) -> list[int]:
    """Processes one of whose arguments contains `text` (the slot's own folder: nothing else names it)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                args = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(text.encode() in a for a in args):
                pids.append(int(proc.name))
    return pids


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def _slot() -> Iterator[_Slot]:
    """The first free slot, held (a file lock the kernel releases if this process dies) until the end."""
    for number in range(SLOTS):
        with open(_Slot(number).lock, "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            yield _Slot(number)
            return
    raise MooseFSError(f"all {SLOTS} MooseFS slots are used by other test sessions on this machine")


def _network(slot: _Slot, stack: ExitStack) -> None:
    """The namespace and the veth pair between it and the host, both ends up; removed at the end."""
    made = _run("ip", "netns", "add", slot.netns, check=False)
    if made.returncode != 0:
        raise MooseFSUnavailable(f"cannot create a network namespace: {made.stderr.strip()}")
    stack.callback(_run, "ip", "netns", "del", slot.netns, check=False)
    _run("ip", "link", "add", slot.veth_host, "type", "veth", "peer", "name", slot.veth_ns)
    stack.callback(_run, "ip", "link", "del", slot.veth_host, check=False)
    _run("ip", "link", "set", slot.veth_ns, "netns", slot.netns)
    _run("ip", "addr", "add", f"{slot.host_ip}/30", "dev", slot.veth_host)
    _run("ip", "link", "set", slot.veth_host, "up")
    inside = ("ip", "netns", "exec", slot.netns)
    _run(*inside, "ip", "addr", "add", f"{slot.ns_ip}/30", "dev", slot.veth_ns)
    _run(*inside, "ip", "link", "set", slot.veth_ns, "up")
    _run(*inside, "ip", "link", "set", "lo", "up")  # the chunkserver reaches the master on its own address


def _write_configs(slot: _Slot) -> tuple[Path, Path]:
    """mfsmaster.cfg (exports: the /30, read-write, root kept root) and mfschunkserver.cfg (storage: a folder)."""
    root = slot.root
    for name in ("master", "chunkserver", "hdd"):
        (root / name).mkdir(parents=True)
    (root / "master" / "metadata.mfs").write_bytes(EMPTY_METADATA)
    (root / "mfsexports.cfg").write_text(f"{slot.network} / rw,alldirs,admin,maproot=0:0\n")
    (root / "mfstopology.cfg").write_text("")
    (root / "mfshdd.cfg").write_text(f"{root / 'hdd'}\n")
    common = "WORKING_USER = root\nWORKING_GROUP = root\nNICE_LEVEL = 0\n"
    master = root / "mfsmaster.cfg"
    master.write_text(
        common + f"DATA_PATH = {root / 'master'}\nEXPORTS_FILENAME = {root / 'mfsexports.cfg'}\n"
        f"TOPOLOGY_FILENAME = {root / 'mfstopology.cfg'}\nSYSLOG_IDENT = mfsmaster-{slot.netns}\n"
        + "".join(f"{key}_LISTEN_HOST = {slot.ns_ip}\n" for key in ("MATOML", "MATOCS", "MATOCL"))
    )
    chunkserver = root / "mfschunkserver.cfg"
    chunkserver.write_text(
        common + f"DATA_PATH = {root / 'chunkserver'}\nHDD_CONF_FILENAME = {root / 'mfshdd.cfg'}\n"
        f"SYSLOG_IDENT = mfschunkserver-{slot.netns}\nMASTER_HOST = {slot.ns_ip}\nBIND_HOST = {slot.ns_ip}\n"
        f"CSSERV_LISTEN_HOST = {slot.ns_ip}\n"
    )
    return master, chunkserver


def _daemon(slot: _Slot, stack: ExitStack, binary: str, config: Path, port: int) -> Path:
    """Start `binary` in the foreground inside the namespace; wait until its port answers; stop it at the end."""
    log = slot.root / f"{binary}.log"
    with open(log, "wb") as out:
        # `ip netns exec` execs the daemon: this pid is the daemon's own.
        proc = subprocess.Popen(["ip", "netns", "exec", slot.netns, binary, "-f", "-c", str(config), "start"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    stack.callback(_stop, proc)

    def listening() -> bool:
        if proc.poll() is not None:
            raise MooseFSError(f"{binary} exited ({proc.returncode}):\n{_tail(log)}")
        return _port_open(slot.ns_ip, port)

    _wait(listening, 30, f"{binary} listening on {slot.ns_ip}:{port}", (log,))
    return log


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # the master saves its metadata and exits
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _mount(slot: _Slot, stack: ExitStack, point: Path) -> None:
    point.mkdir()
    log = slot.root / f"mfsmount-{point.name}.log"
    with open(log, "wb") as out:  # a file, not a pipe: the daemon it leaves behind would hold a pipe open
        res = subprocess.run(["mfsmount", str(point), "-H", slot.ns_ip, "-P", str(MASTER_PORT)], check=False,
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=60)
    if res.returncode != 0:
        raise MooseFSError(f"mfsmount {point} failed ({res.returncode}):\n{_tail(log)}")
    stack.callback(_unmount, point)


@contextmanager
def running_moosefs() -> Iterator[MooseFS]:
    """Start a MooseFS volume (master, chunkserver) in a namespace, mount it twice, yield it; tear all down after,
    whatever happened. MooseFSError (with the daemons' logs) when it does not come up in bounded time."""
    started = time.monotonic()
    with _slot() as slot, ExitStack() as stack:
        _clean_slot(slot)
        stack.callback(shutil.rmtree, slot.root, ignore_errors=True)  # runs last: after unmounts and daemons
        slot.root.mkdir(parents=True)
        _network(slot, stack)
        master_cfg, chunkserver_cfg = _write_configs(slot)
        master_log = _daemon(slot, stack, "mfsmaster", master_cfg, MASTER_PORT)
        chunkserver_log = _daemon(slot, stack, "mfschunkserver", chunkserver_cfg, CHUNKSERVER_PORT)
        fs = MooseFS(slot.root, slot.root / "mount-a", slot.root / "mount-b", slot.ns_ip)
        _mount(slot, stack, fs.mount_a)
        _mount(slot, stack, fs.mount_b)
        # The volume has space once the chunkserver has registered with the master and reported its folder.
        _wait(lambda: os.statvfs(fs.mount_a).f_blocks > 0, 60, "the chunkserver registered with space",
              (master_log, chunkserver_log))
        # One chunkserver: one copy of each chunk; deleted files freed at once (no trash).
        _run("mfssetgoal", "1", str(fs.mount_a))
        _run("mfssettrashtime", "0", str(fs.mount_a))
        probe = os.urandom(1 << 20)
        (fs.mount_a / ".probe").write_bytes(probe)
        if (fs.mount_b / ".probe").read_bytes() != probe:
            raise MooseFSError("a file written through mount A reads back differently through mount B")
        (fs.mount_a / ".probe").unlink()
        fs.startup_seconds = time.monotonic() - started
        yield fs
