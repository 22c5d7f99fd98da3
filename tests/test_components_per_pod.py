"""Installation status per pod (issue #12): pods sharing one workspace and one state database each keep their own
components, see the other pods' at a glance, and read their logs through their own mount of the volume.

A pod here is a DownloadService with its pod id and its web app (Flask's test client, or waitress and Chromium for
the live page), on a tmp workspace and, for the tests marked `shared_volume`, on a real MooseFS mounted twice: pod A
through one mount, pod B through the other, at another path. Older databases (one `components` table keyed by name)
are built with that schema in a real SQLite file and opened by this version.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from downloader.components import ANY_POD, SHARING
from downloader.config import PodSettings, Settings
from downloader.manifest import Catalog
from downloader.pod.entrypoint import Entrypoint
from downloader.service import DownloadService
from downloader.state import Store
from tests.conftest import plain_db, served, test_settings
from web import create_app
from web.auth import AuthConfig

PASSWORD = "per-pod-status-password"
BEARER = {"Authorization": f"Bearer {PASSWORD}"}
# What SQLAlchemy made of the Component model before components were per pod (name as the only key).
OLD_COMPONENTS = """CREATE TABLE components (
    name VARCHAR(64) NOT NULL, state VARCHAR(16) NOT NULL, message VARCHAR, log_path VARCHAR,
    started_at DATETIME, ended_at DATETIME, updated_at DATETIME NOT NULL, PRIMARY KEY (name))"""


@dataclass
class Pod:
    settings: Settings
    svc: DownloadService
    client: Any  # Flask's test client, logged in by header

    def status(self) -> dict[str, Any]:
        res = self.client.get("/api/installation-status", headers=BEARER)
        assert res.status_code == 200
        return res.get_json()  # type: ignore[no-any-return]

    def mine(self) -> dict[str, dict[str, Any]]:
        """This pod's components, by name, as its status API shows them."""
        return {c["name"]: c for c in self.status()["components"]}

    def others(self) -> dict[str, dict[str, str]]:
        """The other pods as this pod's status API shows them: pod id -> component name -> state."""
        return {p["pod"]: {c["name"]: c["state"] for c in p["components"]} for p in self.status()["other_pods"]}

    def report(self, name: str, **body: Any) -> Any:
        return self.client.post(f"/api/installation-status/{name}", headers=BEARER, json=body)


@contextmanager
def pods(*each: tuple[Path, str]) -> Iterator[list[Pod]]:
    """One pod per (workspace as that pod mounts it, pod id): its service (not started: nothing to download) and app."""
    with ExitStack() as stack:
        out = []
        for workspace, pod_id in each:
            settings = test_settings(workspace).with_(pod_id=pod_id)
            svc = DownloadService(settings, catalog=Catalog(models={}, presets={}))
            stack.callback(svc.store.close)
            app = create_app(settings, svc, auth_config=AuthConfig(PASSWORD, "DOWNLOADER_PASSWORD"))
            out.append(Pod(settings, svc, app.test_client()))
        yield out


@pytest.fixture
def second_view(request: pytest.FixtureRequest, workspace: Path) -> Path:
    """The shared workspace as pod B mounts it: the same folder on a local disk; on MooseFS the same folder through
    the second mount (another path)."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("workspace") == "moosefs":
        return request.getfixturevalue("moosefs").on_b(workspace)  # type: ignore[no-any-return]
    return workspace


def write_log(workspace: Path, name: str, text: str) -> Path:
    path = workspace / "logs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def stored(db: Path) -> set[tuple[str, str, str, str | None]]:
    """(pod, name, state, log_path) of every per-pod component row, read with plain sqlite3."""
    with plain_db(db) as conn:
        return set(conn.execute("SELECT pod, name, state, log_path FROM pod_components"))


# --- two pods, one state database -------------------------------------------------------------------------------
@pytest.mark.shared_volume
def test_each_pod_keeps_its_own_components_and_sees_the_others_states(workspace, second_view) -> None:
    with pods((workspace, "pod-a"), (second_view, "pod-b")) as (a, b):
        log_a = write_log(a.settings.workspace, "pod-a-comfyui.log", "A: ComfyUI listening on 8188\n")
        log_b = write_log(b.settings.workspace, "pod-b-comfyui.log", "B: still building\n")
        assert a.report("comfyui", state="done", message="A is up", log_path=str(log_a)).status_code == 200
        assert b.report("comfyui", state="running", message="B is starting", log_path=str(log_b)).status_code == 200
        b.svc.store.set_component("jupyterlab", "done", "token: b-token-shown-on-b-only", pod="pod-b")

        mine_a, mine_b = a.mine(), b.mine()
        assert (mine_a["comfyui"]["state"], mine_a["comfyui"]["message"]) == ("done", "A is up")
        assert mine_a["comfyui"]["log"] == ["A: ComfyUI listening on 8188"]
        assert (mine_b["comfyui"]["state"], mine_b["comfyui"]["message"]) == ("running", "B is starting")
        assert mine_b["comfyui"]["log"] == ["B: still building"]
        assert "jupyterlab" not in mine_a and mine_b["jupyterlab"]["state"] == "done"
        # Each service's own row says whether its pod shares the workspace; the other pod's is in the list.
        assert mine_a[SHARING]["message"].startswith("pod pod-a: ")
        assert a.status()["pod"] == "pod-a" and b.status()["pod"] == "pod-b"
        assert a.others() == {"pod-b": {"comfyui": "running", "jupyterlab": "done", SHARING: mine_b[SHARING]["state"]}}
        assert b.others() == {"pod-a": {"comfyui": "done", SHARING: mine_a[SHARING]["state"]}}
        # At a glance only: another pod's messages and logs stay on its own page.
        page_a = a.client.get("/installation-status", headers=BEARER).get_data(as_text=True)
        api_a = a.client.get("/api/installation-status", headers=BEARER).get_data(as_text=True)
        for shown in (page_a, api_a):
            assert "b-token-shown-on-b-only" not in shown and "B is starting" not in shown and "B: still" not in shown
        assert 'data-testid="other-pod-id">pod-b<' in page_a and 'data-testid="this-pod">pod <span class="mono">pod-a<' in page_a
        # Logs are stored relative to the workspace: the pods mount it at different paths.
        assert ("pod-b", "comfyui", "running", "logs/pod-b-comfyui.log") in stored(a.settings.db_path)


@pytest.mark.shared_volume
def test_a_pod_reads_its_logs_through_wherever_it_mounts_the_volume_now(workspace, second_view, tmp_path) -> None:
    with pods((workspace, "pod-a")) as (a,):
        log = write_log(workspace, "comfyui.log", "ComfyUI says hello\n")
        assert a.report("comfyui", state="done", log_path=str(log)).status_code == 200
    if second_view == workspace:  # a local disk: the volume moves, its old path is gone
        second_view = workspace.rename(tmp_path / "mounted-elsewhere")
    with pods((second_view, "pod-a")) as (again,):
        assert again.mine()["comfyui"]["log"] == ["ComfyUI says hello"]


def test_the_other_pods_are_listed_latest_first_and_bounded(workspace) -> None:
    with pods((workspace, "here")) as (here,):
        for i in range(25):
            here.svc.store.set_component("comfyui", "done" if i % 2 else "running", pod=f"other-{i:02d}")
        data = here.status()
        listed = [p["pod"] for p in data["other_pods"]]
        assert len(listed) == 20 and listed[0] == "other-24" and "other-00" not in listed
        assert data["other_pods_not_shown"] == 5
        assert all(p["last_report"].endswith("Z") for p in data["other_pods"])
        page = here.client.get("/installation-status/live", headers=BEARER).get_data(as_text=True)
        assert "and 5 pods that reported earlier" in page and page.count('data-testid="other-pod"') == 20


def test_components_reported_without_a_pod_show_until_the_pod_reports_them(workspace) -> None:
    """A script (or an earlier version) that reports no pod: every pod shows the row as its own, until it reports
    that name itself; such rows never appear as another pod."""
    with pods((workspace, "pod-a")) as (a,):
        a.svc.store.set_component("backup", "running", "copying")  # no pod
        a.svc.store.set_component("comfyui", "failed", "from an earlier version")
        assert a.mine()["backup"]["message"] == "copying" and a.mine()["comfyui"]["state"] == "failed"
        a.report("comfyui", state="done", message="up")
        assert (a.mine()["comfyui"]["state"], a.mine()["comfyui"]["message"]) == ("done", "up")
        assert a.others() == {}


def test_a_report_keeps_the_times_and_what_it_leaves_out(tmp_path) -> None:
    with Store(tmp_path / "state.db") as store:
        store.set_component("sageattention", "running", "building", "logs/sage.log", pod="p")
        (first,) = store.components("p")
        assert first.started_at and first.ended_at is None
        store.set_component("sageattention", "running", pod="p")  # still running: its start stays
        store.set_component("sageattention", "done", pod="p")
        (done,) = store.components("p")
        assert (done.message, done.log_path, done.started_at) == ("building", "logs/sage.log", first.started_at)
        assert done.ended_at and done.ended_at >= done.started_at
        store.set_component("sageattention", "running", "again", pod="p")  # started anew
        (again,) = store.components("p")
        assert again.started_at > first.started_at and again.ended_at is None and again.message == "again"
        assert store.components("q") == []


# --- which log a component may show (web/status.py readable_log), with relative paths ------------------------
def test_relative_log_paths_are_the_workspace_s_and_the_secret_rules_hold(workspace) -> None:
    with pods((workspace, "pod-a")) as (a,):
        state = a.settings.state_dir
        secrets = {}
        for name in ("ui-password", "session-key", "jupyter-token", "service-pod-a.json"):
            path = state / name
            if not path.exists():
                path.write_text(f"{name}-must-never-be-served\n")
            secrets[name] = path.read_text().strip()
        write_log(workspace, "nodes.log", "cloned 2 nodes\n")
        (workspace.parent / "outside.log").write_text("not the workspace's\n")
        assert a.report("custom nodes", state="done", log_path="logs/nodes.log").status_code == 200
        assert a.mine()["custom nodes"]["log"] == ["cloned 2 nodes"]
        for bad in (".downloader/ui-password", ".downloader/session-key", "../outside.log", ".downloader/../../outside.log"):
            res = a.report("evil", state="running", log_path=bad)
            assert res.status_code == 400 and "log file" in res.get_json()["error"], bad
        # Rows written some other way (a script on the volume, an earlier version) are checked again when shown.
        for i, name in enumerate(secrets):
            a.svc.store.set_component(f"old-{i}", "done", None, f".downloader/{name}", pod="pod-a")
        shown = a.client.get("/api/installation-status", headers=BEARER).get_data(as_text=True)
        shown += a.client.get("/installation-status", headers=BEARER).get_data(as_text=True)
        assert "not a log file" in shown and all(value not in shown for value in secrets.values())


# --- the entrypoint reports as its pod, and hands that pod id to its service -------------------------------------
class _Recorder:
    """Stands in for the Supervisor where only the child's spec matters (its environment)."""

    def __init__(self) -> None:
        self.specs: list[Any] = []

    def start(self, spec: Any) -> None:
        self.specs.append(spec)


def test_the_entrypoint_reports_under_its_pod_id_which_its_service_takes(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("RUNPOD_POD_ID", raising=False)  # off RunPod: each process would make up its own id
    monkeypatch.delenv("DOWNLOADER_POD_ID", raising=False)
    workspace = tmp_path / "ws"
    env = {"WORKSPACE": str(workspace), "MODEL_PRESETS": "none"}
    settings, cfg = Settings.from_env(env), PodSettings.from_env(env)
    entry = Entrypoint(cfg, settings)
    log = workspace / "logs" / "jupyterlab.log"
    entry.report("jupyterlab", "running", "starting", log)  # before the state database is open
    entry.open_store()
    entry.report("workspace", "done", "linked")
    entry.sup = _Recorder()  # type: ignore[assignment]
    entry.start_downloader()
    assert entry.store is not None
    rows = {(c.pod, c.name, c.state, c.log_path) for c in entry.store.components()}
    entry.store.close()
    assert rows == {(settings.pod_id, "jupyterlab", "running", "logs/jupyterlab.log"),
                    (settings.pod_id, "workspace", "done", None)}
    (spec,) = entry.sup.specs  # type: ignore[attr-defined]
    assert Settings.from_env(spec.env).pod_id == settings.pod_id, "the service is the same pod as its entrypoint"
    assert Settings.from_env({**spec.env, "RUNPOD_POD_ID": "rp-1"}).pod_id == "rp-1", "RunPod's id comes first"


# --- a database of an earlier version --------------------------------------------------------------------------
def old_database(db: Path, rows: list[tuple[Any, ...]]) -> None:
    """A state database as the version before per-pod components left it."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with plain_db(db) as conn:
        conn.execute(OLD_COMPONENTS)
        conn.executemany("INSERT INTO components VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


OLD_ROWS = [
    ("comfyui", "done", "ComfyUI on 8188", "/workspace/logs/comfyui.log", "2025-01-02 03:04:05.000000",
     "2025-01-02 03:05:00.000000", "2025-01-02 03:05:00.000000"),
    ("sageattention", "failed", "build failed", None, None, "2025-01-02 03:06:00.000000", "2025-01-02 03:06:00.000000"),
    ("pod old-pod-1", "done", "pod old-pod-1: sharing the workspace", None, None, "2025-01-02 03:00:00.000000",
     "2025-01-02 03:00:00.000000"),
]


def test_an_older_database_is_migrated_in_place_keeping_its_components(workspace) -> None:
    settings = test_settings(workspace)
    old_database(settings.db_path, OLD_ROWS)
    with pods((workspace, "pod-new")) as (new,):
        assert stored(settings.db_path) >= {
            (ANY_POD, "comfyui", "done", "/workspace/logs/comfyui.log"),
            (ANY_POD, "sageattention", "failed", None),
            ("old-pod-1", SHARING, "done", None),
        }
        mine = new.mine()
        assert (mine["comfyui"]["state"], mine["comfyui"]["message"]) == ("done", "ComfyUI on 8188")
        assert mine["comfyui"]["started_at"] == "2025-01-02T03:04:05Z"
        assert mine["sageattention"]["state"] == "failed"
        assert new.others() == {"old-pod-1": {SHARING: "done"}}
        new.report("sageattention", state="done", message="built")
        assert new.mine()["sageattention"]["message"] == "built"
    # The old table is left as it was, for pods still running an earlier version: their writes by name still work.
    with plain_db(settings.db_path) as conn:
        assert sorted(r[0] for r in conn.execute("SELECT name FROM components")) == sorted(r[0] for r in OLD_ROWS)
        conn.execute("UPDATE components SET state = 'running' WHERE name = 'comfyui'")
    with Store(settings.db_path) as store:  # opened again: nothing carried over twice
        assert len([c for c in store.components() if c.pod == ANY_POD]) == 2


def test_a_migration_that_fails_changes_nothing(tmp_path) -> None:
    db = tmp_path / "state" / "state.db"
    db.parent.mkdir()
    with plain_db(db) as conn:  # a components table this version cannot read (no log_path column)
        conn.execute("CREATE TABLE components (name VARCHAR(64) PRIMARY KEY, state VARCHAR(16), message VARCHAR)")
        conn.execute("INSERT INTO components VALUES ('comfyui', 'done', 'kept')")
    with pytest.raises(OperationalError, match="log_path"):
        Store(db)
    with plain_db(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "pod_components" not in tables, "the new table is rolled back with the failed copy"
        assert list(conn.execute("SELECT * FROM components")) == [("comfyui", "done", "kept")]


def open_and_read(db: Path, barrier: threading.Barrier, seen: dict[Path, Any], errors: list[Exception]) -> None:
    """One pod opening the database (released with the other), and the components it then reads."""
    try:
        barrier.wait(30)
        with Store(db) as store:
            seen[db] = sorted((c.pod, c.name, c.state) for c in store.components())
    except Exception as e:  # noqa: BLE001  (reported by the test, with the round)
        errors.append(e)


@pytest.mark.shared_volume
def test_two_pods_opening_an_older_database_at_once_migrate_it_once(workspace, second_view) -> None:
    for round_ in range(6):
        db_a = workspace / f"round-{round_}" / "state.db"
        old_database(db_a, OLD_ROWS)
        db_b = second_view / f"round-{round_}" / "state.db"
        barrier, seen, errors = threading.Barrier(2), {}, []
        threads = [threading.Thread(target=open_and_read, args=(db, barrier, seen, errors)) for db in (db_a, db_b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, f"round {round_}: {errors}"
        expected = sorted([(ANY_POD, "comfyui", "done"), (ANY_POD, "sageattention", "failed"),
                           ("old-pod-1", SHARING, "done")])
        assert seen == {db_a: expected, db_b: expected}, f"round {round_}"
        with plain_db(db_a) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --- the live page -----------------------------------------------------------------------------------------------
def test_the_page_shows_another_pod_s_progress_without_a_reload(workspace, page) -> None:
    from playwright.sync_api import expect

    with pods((workspace, "pod-a"), (workspace, "pod-b")) as (a, b), served(a.client.application) as url:
        b.svc.store.set_component("comfyui", "pending", "waiting for models", pod="pod-b")
        page.goto(url + "/installation-status")
        page.get_by_test_id("password").fill(PASSWORD)
        page.get_by_test_id("login-submit").click()
        expect(page).to_have_url(url + "/installation-status")
        expect(page.get_by_test_id("this-pod")).to_have_text("pod pod-a")
        other = page.locator('[data-testid="other-pod"][data-pod="pod-b"]')
        comfy = other.locator('[data-testid="other-pod-component"][data-component="comfyui"]')
        expect(comfy).to_have_text("comfyui pending")
        expect(page.locator('.comp[data-component="comfyui"]')).to_have_count(0)  # pod B's, not this pod's
        b.svc.store.set_component("comfyui", "running", pod="pod-b")
        expect(comfy).to_have_text("comfyui running", timeout=15_000)
        b.svc.store.set_component("custom nodes", "failed", pod="pod-b")
        expect(other.locator('[data-component="custom nodes"] .badge')).to_have_text("failed", timeout=15_000)
        expect(other).not_to_contain_text("waiting for models")
