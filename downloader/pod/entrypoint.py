"""The container's entrypoint: JupyterLab and the downloader at once, ComfyUI the moment its models are verified.

Order of events (each reported as a component on the installation-status page):
1. workspace: the image's ComfyUI moves to $WORKSPACE/ComfyUI on first run; later runs link to it.
2. jupyterlab: started at once on JUPYTER_PORT, token = JUPYTER_PASSWORD (or a generated, printed one).
3. downloader: `downloader serve` on DOWNLOADER_PORT, queuing MODEL_PRESETS.
4. sageattention: built per INSTALL_SAGEATTENTION (background | true | false).
5. custom nodes: cloned if missing; a failure is reported and blocks nothing.
6. comfyui: a placeholder page on COMFYUI_PORT until ComfyUI is ready by the one rule of `downloader.readiness`
   (every required model of the selected presets, and every download marked required, verified in place) and
   SageAttention is built (with INSTALL_SAGEATTENTION=true); then ComfyUI itself.
SIGTERM/SIGINT stop every child (SIGKILL after a grace period) and exit with 128 + the signal.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

# Only light imports here: JupyterLab is started before SQLAlchemy and pydantic are loaded (about a second).
from ..config import LOGS_FOLDER, PodSettings, Settings, child_env
from ..errors import ConfigError, DownloaderError
from ..signals import stop_on_signals
from .model_paths import ensure_model_paths
from .supervisor import Child, Spec, Supervisor
from .workspace import jupyter_token, persist_comfyui

if TYPE_CHECKING:
    from ..state import Store
    from .placeholder import Missing, Placeholder


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Entrypoint:
    """Runs the steps and the supervision loop; `run()` returns the exit code."""

    def __init__(self, cfg: PodSettings, settings: Settings) -> None:
        self.cfg, self.settings = cfg, settings
        self.store: Store | None = None  # opened after JupyterLab has started
        self._early: list[tuple[str, str, str | None, Path | None]] = []  # reports made before that
        self.sup = Supervisor(cfg.workspace / LOGS_FOLDER, on_change=self._on_child)
        self.stop_event = threading.Event()
        self.placeholder: Placeholder | None = None
        self.comfy_started = False
        self.required: list[tuple[str, str]] = []  # (model id, dest) that ComfyUI waits for
        self.presets: tuple[str, ...] = ()  # the selected presets the manifests know
        self.jupyter_note = ""
        self._announced: set[str] = set()
        self._nodes: Iterator[None] | None = None  # the custom-node installation, advanced by the loop

    # --- reporting ----------------------------------------------------------------------------------
    def report(self, name: str, state: str, message: str | None = None, log: Path | None = None) -> None:
        """Record a step as this pod's component (pods sharing the state database each keep their own) and say it."""
        if self.store is None:
            self._early.append((name, state, message, log))
        else:
            self._record(name, state, message, log)
        print(f"[entrypoint] {name}: {state}" + (f": {message}" if message else ""), flush=True)

    def _record(self, name: str, state: str, message: str | None, log: Path | None) -> None:
        from ..components import log_ref

        assert self.store is not None
        # The log relative to the workspace: another pod mounts a shared volume at another path.
        self.store.set_component(name, state, message, log_ref(log, self.cfg.workspace) if log else None,
                                 pod=self.settings.pod_id)

    def open_store(self) -> None:
        """Open the state DB (loads SQLAlchemy) and record what was reported before."""
        from ..state import Store

        self.store = Store(self.settings.db_path)
        for name, state, message, log in self._early:
            self._record(name, state, message, log)
        self._early.clear()

    def _on_child(self, child: Child, message: str) -> None:
        state = {"running": "running", "backoff": "running", "done": "done", "failed": "failed"}.get(child.state)
        if state is not None:
            self._announced.discard(child.spec.name)
            self.report(child.spec.name, state, message, child.log_path)

    # --- steps ----------------------------------------------------------------------------------------
    def _env(self, **extra: str) -> dict[str, str]:
        """A child's environment: ours, the resolved workspace, and `extra`."""
        return child_env(**{"WORKSPACE": str(self.cfg.workspace), **extra})

    def start_jupyter(self) -> None:
        if not self.cfg.enable_jupyter:
            self.report("jupyterlab", "skipped", "ENABLE_JUPYTER=false")
            return
        token, generated = jupyter_token(self.cfg, self.settings.state_dir)
        if generated:
            print(f"[entrypoint] JupyterLab token (generated, kept in {self.settings.state_dir}/jupyter-token): "
                  f"{token}", flush=True)
        cmd = (f"{self.cfg.jupyter_cmd} --ip=0.0.0.0 --port={self.cfg.jupyter_port} --no-browser --allow-root "
               f"--ServerApp.root_dir={shlex.quote(str(self.cfg.workspace))}")
        # The token travels in the environment, never on a command line that `ps` shows.
        self.sup.start(Spec("jupyterlab", cmd, cwd=self.cfg.workspace, env=self._env(JUPYTER_TOKEN=token),
                            max_restarts=self.cfg.max_restarts, stable_seconds=self.cfg.stable_seconds))
        self.jupyter_note = f"token: {token}" if generated else "token: the value of JUPYTER_PASSWORD"

    def start_downloader(self) -> None:
        cmd = [sys.executable, "-m", "downloader", "serve", "--port", str(self.cfg.downloader_port)]
        # PYTHONSAFEPATH: a folder named like one of our packages in the working directory must not shadow it.
        # DOWNLOADER_POD_ID: the service is this pod (its components, claims and status page), also off RunPod.
        env = self._env(MODEL_PRESETS=",".join(self.presets) or "none", PYTHONSAFEPATH="1",
                        DOWNLOADER_POD_ID=self.settings.pod_id)
        self.sup.start(Spec("downloader", cmd, env=env, max_restarts=self.cfg.max_restarts,
                            stable_seconds=self.cfg.stable_seconds))

    def start_sage(self) -> None:
        if self.cfg.sage_mode == "false":
            self.report("sageattention", "skipped", "INSTALL_SAGEATTENTION=false")
            return
        self.sup.start(Spec("sageattention", self.cfg.sage_cmd, env=self._env(), restart=False))

    def install_nodes(self) -> Iterator[None]:
        """Clone the minimal custom nodes that are missing, one after the other.

        A generator that the main loop advances once per pass (`step_nodes`): each clone is a one-shot child,
        and this yields until the loop's `tick()` has seen it end. So the loop's thread is the only one that
        drives the supervisor, and a slow clone holds up nothing else."""
        if not self.cfg.custom_nodes:
            self.report("custom nodes", "skipped", "CUSTOM_NODES is empty")
            return
        nodes_dir = self.cfg.workspace / "ComfyUI" / "custom_nodes"
        nodes_dir.mkdir(parents=True, exist_ok=True)
        log = self.cfg.workspace / LOGS_FOLDER / "custom-nodes.log"
        self.report("custom nodes", "running", f"{len(self.cfg.custom_nodes)} to check", log)
        failed = []
        for url in self.cfg.custom_nodes:
            name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
            if (nodes_dir / name).exists():
                continue
            spec = Spec(f"node-{name}", ["git", "clone", "--depth=1", url, str(nodes_dir / name)],
                        env=self._env(GIT_TERMINAL_PROMPT="0"), restart=False)
            child = self.sup.start(spec)
            try:
                while child.state == "running":
                    yield
            finally:  # also when the entrypoint stops mid-clone (run() closes this generator after stop_all)
                if child.state != "done":  # a half-made folder would pass for an installed node next time
                    shutil.rmtree(nodes_dir / name, ignore_errors=True)
            with open(log, "a") as fh, open(child.log_path, errors="replace") as clone_log:
                fh.write(clone_log.read())
            if child.state != "done":
                failed.append(name)
        if failed:
            self.report("custom nodes", "failed", f"could not install: {', '.join(failed)} (ComfyUI starts anyway)", log)
        else:
            self.report("custom nodes", "done", ", ".join(u.rsplit("/", 1)[-1] for u in self.cfg.custom_nodes), log)

    def step_nodes(self) -> None:
        """One step of `install_nodes` (called by the main loop); its failure is reported, never raised."""
        if self._nodes is None:
            return
        try:
            next(self._nodes)
        except StopIteration:
            self._nodes = None
        except OSError as e:  # e.g. custom_nodes cannot be created: ComfyUI starts anyway
            self._nodes = None
            self.report("custom nodes", "failed", f"{e} (ComfyUI starts anyway)")

    # --- the ComfyUI gate -----------------------------------------------------------------------------
    def resolve_required(self) -> None:
        """Which models ComfyUI waits for: the required ones of the selected presets the manifests know."""
        from ..manifest import ManifestError, endpoints_of, load_catalog
        from ..readiness import preset_requirements

        try:
            catalog = load_catalog(self.settings.manifest_dirs, self.settings.models_dir, endpoints_of(self.settings))
        except ManifestError as e:  # the downloader UI still comes up and shows the same error
            self.report("presets", "failed", f"manifests unusable: {e}")
            return
        unknown = [p for p in self.cfg.presets if p not in catalog.presets]
        if unknown:
            known = ", ".join(sorted(catalog.presets))
            self.report("presets", "failed", f"unknown MODEL_PRESETS {', '.join(unknown)} (known: {known})")
        self.presets = tuple(p for p in self.cfg.presets if p in catalog.presets)
        self.required = preset_requirements(catalog, self.presets)

    def missing(self) -> Missing:
        """What ComfyUI still waits for (the rule of downloader.readiness): empty when it may start."""
        from ..readiness import missing

        assert self.store is not None
        return missing(self.required, self.store.rows(), self.settings.models_dir)

    def waiting_for(self) -> list[str]:
        waits = []
        sage = self.sup.children.get("sageattention")
        if self.cfg.sage_mode == "true" and sage is not None and sage.state == "running":
            waits.append("SageAttention is being built (INSTALL_SAGEATTENTION=true)")
        return waits

    def placeholder_status(self) -> tuple[Missing, list[str]]:
        return self.missing(), self.waiting_for()

    def maybe_start_comfy(self) -> None:
        if self.comfy_started or self.missing() or self.waiting_for():
            return
        if self.placeholder is not None:
            self.placeholder.stop()
            self.placeholder = None
        comfy_dir = self.cfg.workspace / "ComfyUI"
        cmd = f"{self.cfg.comfy_cmd} {self.cfg.comfy_args}".strip()
        env = self._env(COMFYUI_PORT=str(self.cfg.comfy_port))
        self.sup.start(Spec("comfyui", cmd, cwd=comfy_dir, env=env, max_restarts=self.cfg.max_restarts,
                            stable_seconds=self.cfg.stable_seconds))
        self.comfy_started = True

    # --- the loop ---------------------------------------------------------------------------------------
    def announce_ports(self) -> None:
        """Mark a service done once its port answers (what the status page and the benchmark care about)."""
        for name, port, note in (("jupyterlab", self.cfg.jupyter_port, getattr(self, "jupyter_note", "")),
                                 ("downloader", self.cfg.downloader_port, "web UI"),
                                 ("comfyui", self.cfg.comfy_port, "ComfyUI")):
            child = self.sup.children.get(name)
            if child is None or child.state != "running" or name in self._announced:
                continue
            if name == "comfyui" and self.placeholder is not None:
                continue
            if port_open(port):
                self._announced.add(name)
                self.report(name, "done", f"listening on port {port}: {note}", child.log_path)

    def run(self) -> int:
        with stop_on_signals(self.stop_event.set) as received:
            try:
                # JupyterLab first: it needs nothing but the workspace folder, and takes seconds to come up.
                self.cfg.workspace.mkdir(parents=True, exist_ok=True)
                self.start_jupyter()
                self.open_store()
                self.report("workspace", "running", "preparing ComfyUI in the workspace")
                message = persist_comfyui(self.cfg.image_dir, self.cfg.workspace)
                extra = ensure_model_paths(self.cfg.workspace / "ComfyUI", self.settings.models_dir)
                self.report("workspace", "done", message + (f"; {extra}" if extra else ""))
                self.resolve_required()
                self.start_downloader()
                self.report("comfyui", "pending", "waiting for the required models")
                if self.missing():
                    from .placeholder import Placeholder

                    self.placeholder = Placeholder(self.cfg.comfy_port, self.placeholder_status, self.cfg.downloader_port,
                                                   pod_id=self.settings.runpod_pod_id)
                    self.placeholder.start()
                self.start_sage()
                self._nodes = self.install_nodes()
                # The only caller of tick(): every child (services, jobs, clones) is watched from this thread.
                while not self.stop_event.is_set():
                    self.sup.tick()
                    self.step_nodes()
                    self.announce_ports()
                    self.maybe_start_comfy()
                    self.stop_event.wait(0.5)
            except (DownloaderError, OSError) as e:
                self.report("entrypoint", "failed", str(e))
                print(f"[entrypoint] error: {e}", file=sys.stderr, flush=True)
                return 1
            finally:
                if self.placeholder is not None:
                    self.placeholder.stop()
                self.sup.stop_all(self.cfg.grace)
                if self._nodes is not None:
                    self._nodes.close()  # removes a clone that was cut short
                if self.store is not None:
                    self.store.close()
        return 128 + received[0] if received else 0


def main() -> int:
    """Read the settings (a bad variable: one line, exit 2) and run the entrypoint until stopped."""
    try:
        cfg = PodSettings.from_env()
        settings = Settings.from_env()
    except ConfigError as e:
        print(f"[entrypoint] configuration error: {e}", file=sys.stderr)
        return 2
    return Entrypoint(cfg, settings).run()
