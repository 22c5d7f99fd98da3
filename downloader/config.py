"""Every environment variable the downloader reads, parsed once, in one place.

This is the only module that touches `os.environ` (tests/test_config.py enforces it): `Settings.from_env()`
(engine, service, UI) and `PodSettings.from_env()` (the container's entrypoint) parse and validate every
variable at start, so a bad value is one `ConfigError` naming the variable, never a traceback later;
`child_env()` hands the environment on to child processes. Everything else receives a `Settings`, so tests
build one directly instead of patching the environment.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import socket
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from .errors import ConfigError
from .origins import Origin, origin_of, parse_allowed_hosts

N = TypeVar("N", int, float)
# Files in the state folder that hold secrets: never served by the file manager.
UI_PASSWORD_FILE, SESSION_KEY_FILE, JUPYTER_TOKEN_FILE = "ui-password", "session-key", "jupyter-token"
SERVICE_FILE = "service.json"  # the running service's port and local token, for the CLI (downloader.locks)
# Each pod's service writes its own record, `service-<pod>.json` (see `service_file`): secrets too.
_SERVICE_RECORD = re.compile(r"service(-[A-Za-z0-9_.-]+)?\.json")


class _SecretNames(frozenset[str]):
    """The names above, plus every pod's service record: `name in SECRET_STATE_FILES` is how the file manager
    and the status page refuse them, so the per-pod names answer that test too (iterating lists the fixed ones)."""

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or (isinstance(name, str) and _SERVICE_RECORD.fullmatch(name) is not None)


SECRET_STATE_FILES = _SecretNames({UI_PASSWORD_FILE, SESSION_KEY_FILE, JUPYTER_TOKEN_FILE, SERVICE_FILE})
# How long a pod's claim on a file lasts without renewal: a pod that dies loses its files after this long, and
# another pod takes them over (see downloader/claims.py). Renewed every CLAIM_LEASE / 4 seconds while it works.
CLAIM_LEASE_SECONDS = 20.0
# The manifests shipped with the project live next to the package (repo layout / editable install).
LOGS_FOLDER = "logs"  # $WORKSPACE/logs: the entrypoint's children log there
SHIPPED_MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"


def _env_number(env: dict[str, str], name: str, default: N, lo: N, hi: N, kind: type[N]) -> N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {'whole number' if kind is int else 'number'}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range ({lo}..{hi})")
    return value


def _port(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip() or str(default)
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ConfigError(f"{name}={raw!r} is not a port number (1..65535)")
    return int(raw)


def _endpoint(env: dict[str, str], name: str, default: str) -> str:
    """An endpoint URL (HF_ENDPOINT, CIVITAI_ENDPOINT): http(s)://host[:port][/path], without a trailing slash."""
    value = (env.get(name) or default).strip().rstrip("/")
    if origin_of(value) is None or "?" in value or "#" in value or "@" in value.split("/")[2]:
        raise ConfigError(f"{name}={value!r} is not an http(s)://host[:port] URL")
    return value


def _allowed_hosts(env: dict[str, str], name: str) -> frozenset[Origin]:
    try:
        return parse_allowed_hosts((env.get(name) or "").split(","))
    except ValueError as e:
        raise ConfigError(f"{name}=…: {e}") from None  # the value is not echoed: it may hold a password


def _env_size(env: dict[str, str], name: str, default: str) -> str:
    """An aria2 size such as 32M or 1G: checked here so a typo fails before aria2 starts."""
    raw = env.get(name, "").strip() or default
    digits = raw[:-1] if raw[-1:].upper() in ("K", "M", "G") else raw
    if not digits.isdigit():
        raise ConfigError(f"{name}={raw!r} is not a size like 32M or 1G")
    return raw


DEFAULT_PRESETS = "wan22-t2v-14b-fp8"  # what `fetch` and the entrypoint take when MODEL_PRESETS is unset
COMFYUI_PORT, JUPYTER_PORT, DOWNLOADER_PORT = 8188, 8888, 8765  # the documented default ports


def parse_presets(raw: str) -> tuple[str, ...]:
    """MODEL_PRESETS: comma-separated preset names; `none` (any case) or nothing means no preset."""
    return tuple(p.strip() for p in raw.split(",") if p.strip() and p.strip().lower() != "none")


def new_pod_id() -> str:
    """A pod id for a machine RunPod did not name: the host name plus an id made now (two pods may share a host
    name, and a restarted service must not inherit the claims of the one that died)."""
    return f"{socket.gethostname() or 'pod'}-{secrets.token_hex(3)}"


def pod_file_part(pod_id: str) -> str:
    """A pod id as it goes into a file name in the state folder (aria2's log, the service record, the lock)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", pod_id)[:100] or "pod"


def service_file(pod_id: str) -> str:
    """The name of a pod's service record in the state folder."""
    return f"service-{pod_file_part(pod_id)}.json"


def pod_port_url(host_header: str, port: int, scheme: str = "http", pod_id: str | None = None) -> str:
    """Another port of this pod as a browser reaches it: RunPod's proxy when `pod_id` (RUNPOD_POD_ID) is set,
    else same host, other port. `host_header` is the request's Host (with or without its port)."""
    if pod_id:
        return f"https://{pod_id}-{port}.proxy.runpod.net/"
    host = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    return f"{scheme}://{host or 'localhost'}:{port}/"


@dataclass(frozen=True)
class Settings:
    """Resolved configuration; paths are absolute."""

    workspace: Path
    models_dir: Path
    state_dir: Path
    manifest_dirs: tuple[Path, ...]
    hf_token: str | None = field(default=None, repr=False)  # never printed
    civitai_token: str | None = field(default=None, repr=False)
    hf_endpoint: str = "https://huggingface.co"
    civitai_endpoint: str = "https://civitai.com"  # CIVITAI_ENDPOINT: a mirror, or a stand-in in tests
    # DOWNLOADER_ALLOWED_HOSTS: origins a workflow's URLs may be fetched from besides the hub and CivitAI.
    allowed_hosts: frozenset[Origin] = frozenset()
    aria2c: str = "aria2c"
    connections: int = 16  # aria2 -x / -s: connections per file
    min_split_size: str = "32M"  # smallest range aria2 gives one connection (see aria2.py: in-order pieces)
    max_concurrent: int = 2  # files downloading at once
    max_attempts: int = 5  # tries per file before it is marked failed
    stall_seconds: float = 60.0  # no new byte for this long = stalled, restart it
    retry_base_seconds: float = 2.0  # backoff: base * 2**attempt, capped at 60 s
    aria2_max_tries: int = 5  # aria2's own quick retries (5xx, dropped connections) before it reports an error
    aria2_retry_wait: int = 2  # seconds between those
    aria2_start_timeout: float = 10.0
    poll_interval: float = 0.2  # how often the loop asks aria2; a finished hash wakes it at once
    command_timeout: float = 30.0  # how long a request waits for the service's loop to answer (EngineUnavailable after)
    max_download_limit: str = "0"  # aria2 --max-overall-download-limit (0 = unlimited)
    model_presets: tuple[str, ...] | None = None  # MODEL_PRESETS parsed; None when unset (each user picks its default)
    # The web UI: its port, its login, and the links to the pod's other services.
    downloader_port: int = DOWNLOADER_PORT
    ui_auth: bool = True  # False only with DOWNLOADER_AUTH=none
    ui_password: str | None = field(default=None, repr=False)  # DOWNLOADER_PASSWORD
    jupyter_password: str | None = field(default=None, repr=False)  # the UI's password when DOWNLOADER_PASSWORD is unset
    jupyter_port: int = JUPYTER_PORT
    comfy_port: int = COMFYUI_PORT
    runpod_pod_id: str | None = None  # set by RunPod: links to other ports go through its proxy
    # Which pod this process is (RUNPOD_POD_ID, else host name + an id made at start): the claims on files in a
    # state folder that several pods share carry it. Settings built directly (tests) get a fresh one each.
    pod_id: str = field(default_factory=new_pod_id)
    claim_lease: float = CLAIM_LEASE_SECONDS  # DOWNLOADER_CLAIM_LEASE: seconds a dead pod keeps its files

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def logs_dir(self) -> Path:
        """Where the entrypoint's children write their logs (`$WORKSPACE/logs`)."""
        return self.workspace / LOGS_FOLDER

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read the documented environment variables (see README), with defaults."""
        env = dict(os.environ if env is None else env)
        workspace = Path(env.get("WORKSPACE") or "/workspace").expanduser().absolute()
        models_dir = Path(env.get("MODELS_DIR") or workspace / "ComfyUI" / "models").expanduser().absolute()
        state_dir = Path(env.get("DOWNLOADER_STATE") or workspace / ".downloader").expanduser().absolute()
        shipped = Path(env.get("DOWNLOADER_MANIFESTS") or SHIPPED_MANIFESTS).expanduser().absolute()
        return cls(
            workspace=workspace,
            models_dir=models_dir,
            state_dir=state_dir,
            manifest_dirs=(shipped, workspace / "manifests"),
            hf_token=env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN") or None,
            civitai_token=env.get("CIVITAI_TOKEN") or None,
            hf_endpoint=_endpoint(env, "HF_ENDPOINT", "https://huggingface.co"),
            civitai_endpoint=_endpoint(env, "CIVITAI_ENDPOINT", "https://civitai.com"),
            allowed_hosts=_allowed_hosts(env, "DOWNLOADER_ALLOWED_HOSTS"),
            aria2c=env.get("ARIA2C") or "aria2c",
            connections=_env_number(env, "ARIA2_CONNECTIONS", 16, 1, 16, int),
            min_split_size=_env_size(env, "ARIA2_MIN_SPLIT_SIZE", "32M"),
            max_concurrent=_env_number(env, "DOWNLOADER_MAX_CONCURRENT", 2, 1, 16, int),
            max_attempts=_env_number(env, "DOWNLOADER_MAX_ATTEMPTS", 5, 1, 100, int),
            stall_seconds=_env_number(env, "DOWNLOADER_STALL_SECONDS", 60.0, 1.0, 3600.0, float),
            retry_base_seconds=_env_number(env, "DOWNLOADER_RETRY_SECONDS", 2.0, 0.0, 600.0, float),
            max_download_limit=_env_size(env, "ARIA2_MAX_DOWNLOAD_LIMIT", "0"),
            aria2_max_tries=_env_number(env, "ARIA2_MAX_TRIES", 5, 1, 100, int),
            aria2_retry_wait=_env_number(env, "ARIA2_RETRY_WAIT", 2, 0, 600, int),
            model_presets=parse_presets(env["MODEL_PRESETS"]) if "MODEL_PRESETS" in env else None,
            downloader_port=_port(env, "DOWNLOADER_PORT", DOWNLOADER_PORT),
            # Only `none` turns the login off; any other value keeps it on (security stays default-on).
            ui_auth=env.get("DOWNLOADER_AUTH", "").strip().lower() != "none",
            ui_password=env.get("DOWNLOADER_PASSWORD") or None,
            jupyter_password=env.get("JUPYTER_PASSWORD") or None,
            jupyter_port=_port(env, "JUPYTER_PORT", JUPYTER_PORT),
            comfy_port=_port(env, "COMFYUI_PORT", COMFYUI_PORT),
            runpod_pod_id=env.get("RUNPOD_POD_ID") or None,
            # DOWNLOADER_POD_ID: the id the entrypoint hands its service, so both report as one pod off RunPod too.
            pod_id=(env.get("RUNPOD_POD_ID") or env.get("DOWNLOADER_POD_ID") or "").strip() or new_pod_id(),
            claim_lease=_env_number(env, "DOWNLOADER_CLAIM_LEASE", CLAIM_LEASE_SECONDS, 1.0, 30.0, float),
        )

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests, CLI flags)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def child_env(**extra: str) -> dict[str, str]:
    """The environment a child process (JupyterLab, ComfyUI, the service, git) starts with: ours plus `extra`.

    Handing the environment on is not reading configuration; it lives here so that this module stays the
    only one that touches `os.environ`."""
    env = dict(os.environ)
    env.update(extra)
    return env


# --- the container's entrypoint (downloader.pod) ------------------------------------------------------
DEFAULT_NODES = "https://github.com/ltdrdata/ComfyUI-Manager,https://github.com/Fannovel16/comfyui_controlnet_aux"
DEFAULT_SAGE = (
    f"{shlex.quote(sys.executable)} -c 'import sageattention' 2>/dev/null || "
    f"{shlex.quote(sys.executable)} -m pip install --no-build-isolation git+https://github.com/thu-ml/SageAttention.git"
)


def _flag(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: use true or false")


@dataclass(frozen=True)
class PodSettings:
    """The entrypoint's environment variables (see the README's table), parsed once."""

    workspace: Path
    image_dir: Path
    comfy_port: int
    comfy_cmd: str
    comfy_args: str
    jupyter_port: int
    jupyter_password: str | None
    enable_jupyter: bool
    jupyter_cmd: str
    downloader_port: int
    presets: tuple[str, ...]
    sage_mode: str
    sage_cmd: str
    custom_nodes: tuple[str, ...]
    grace: float
    max_restarts: int
    stable_seconds: float  # a service that ran this long without exiting has its restart count reset

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> PodSettings:
        """Read the entrypoint's variables (see the README), with defaults; a bad value raises ConfigError."""
        env = dict(os.environ if env is None else env)
        sage = (env.get("INSTALL_SAGEATTENTION") or "background").strip().lower()
        if sage not in ("background", "true", "false"):
            raise ConfigError(f"INSTALL_SAGEATTENTION={sage!r}: use background, true or false")
        comfy_port = _port(env, "COMFYUI_PORT", COMFYUI_PORT)
        return cls(
            workspace=Path(env.get("WORKSPACE") or "/workspace").absolute(),
            image_dir=Path(env.get("COMFYUI_IMAGE_DIR") or "/ComfyUI").absolute(),
            comfy_port=comfy_port,
            comfy_cmd=env.get("COMFYUI_CMD") or f"{shlex.quote(sys.executable)} main.py --listen 0.0.0.0 --port {comfy_port}",
            comfy_args=env.get("COMFYUI_ARGS", ""),
            jupyter_port=_port(env, "JUPYTER_PORT", JUPYTER_PORT),
            jupyter_password=env.get("JUPYTER_PASSWORD") or None,
            enable_jupyter=_flag(env, "ENABLE_JUPYTER", True),
            jupyter_cmd=env.get("JUPYTER_CMD") or f"{shlex.quote(sys.executable)} -m jupyterlab",
            downloader_port=_port(env, "DOWNLOADER_PORT", DOWNLOADER_PORT),
            presets=parse_presets(env.get("MODEL_PRESETS", DEFAULT_PRESETS)),
            sage_mode=sage,
            sage_cmd=env.get("SAGEATTENTION_CMD") or DEFAULT_SAGE,
            custom_nodes=tuple(u.strip() for u in env.get("CUSTOM_NODES", DEFAULT_NODES).split(",") if u.strip()),
            grace=_env_number(env, "STOP_GRACE_SECONDS", 10.0, 0.0, 86400.0, float),
            max_restarts=_env_number(env, "SERVICE_MAX_RESTARTS", 5, 0, 1_000_000, int),
            stable_seconds=_env_number(env, "SERVICE_STABLE_SECONDS", 60.0, 1.0, 86400.0, float),
        )
