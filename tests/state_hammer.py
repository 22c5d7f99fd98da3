"""One process of the state-database hammer (tests/test_state_journal.py, tests/test_moosefs.py), as a pod runs it.

    python -m tests.state_hammer DB_PATH PREFIX COUNT TOTAL GO_FILE

Opens the state database, says "ready", waits for GO_FILE (so that the processes start writing together), then
for COUNT downloads of its own: adds it, moves it to downloading, records progress, moves it to verifying, then done. Then it
waits (bounded) until it sees TOTAL done rows, its own and the other processes', and prints one JSON line:
what it saw, the journal mode, `PRAGMA integrity_check`. Any exception ("database is locked" included) ends it
with a traceback and a non-zero exit code, as it would end a user's command.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from downloader.state import DownloadState, Store

S = DownloadState


def main(db_path: Path, prefix: str, count: int, total: int, go_file: Path) -> dict[str, object]:
    with Store(db_path) as store:
        print("ready", flush=True)
        deadline = time.monotonic() + 60
        while not go_file.exists():
            assert time.monotonic() < deadline, "no go signal in 60 s"
            time.sleep(0.01)
        for i in range(count):
            download_id = f"{prefix}{i}"
            store.upsert(download_id, source=f"https://example.invalid/{download_id}", dest=f"{prefix}/{i}.bin",
                         size=100)
            store.transition(download_id, S.DOWNLOADING, expect=S.QUEUED)
            store.update(download_id, bytes_done=50)
            store.transition(download_id, S.VERIFYING, expect=S.DOWNLOADING, bytes_done=100)
            store.transition(download_id, S.DONE, expect=S.VERIFYING)
        deadline = time.monotonic() + 120
        while len(done := store.downloads(state=S.DONE)) < total:
            if time.monotonic() > deadline:
                with Store(db_path) as fresh:  # a new connection opens the file again
                    again = len(fresh.downloads(state=S.DONE))
                raise AssertionError(f"{prefix}: saw {len(done)} of {total} done rows after 120 s; a new connection"
                                     f" sees {again}")
            time.sleep(0.05)
        conn = store.engine.raw_connection()
        try:
            cur = conn.cursor()
            journal = cur.execute("PRAGMA journal_mode").fetchone()[0]
            integrity = cur.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
        events = len(store.events(limit=100_000))
        return {"done": sorted(r.id for r in done), "journal_mode": journal, "integrity": integrity, "events": events}


def run_hammers(db_paths: list[Path], count: int, go_file: Path, timeout: float = 240) -> list[dict[str, Any]]:
    """Run one hammer process per path (the same database, maybe through different mounts) at the same time;
    return what each printed. AssertionError with a process's output when one fails or prints "locked"."""
    repo = Path(__file__).resolve().parent.parent
    total = count * len(db_paths)
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.state_hammer", str(db), f"p{i}-", str(count), str(total),
                          str(go_file)], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, db in enumerate(db_paths)
    ]
    try:
        for proc in procs:  # each has opened the database (made it, for the first) before any starts writing
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == "ready\n", f"a hammer did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        go_file.touch()
        outputs = [proc.communicate(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    results = []
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, f"a hammer failed ({proc.returncode}):\n{err}"
        assert "locked" not in err, f"a hammer saw the database locked:\n{err}"
        results.append(json.loads(out))
    return results


if __name__ == "__main__":
    db, prefix, count, total, go = sys.argv[1:6]
    print(json.dumps(main(Path(db), prefix, int(count), int(total), Path(go))), flush=True)
