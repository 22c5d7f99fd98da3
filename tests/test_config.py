"""Configuration: config.py is the only reader of the environment, and a bad variable is one clear line, exit 2.

Every variable is parsed and validated once at start (Settings / PodSettings); the web UI, the CLI and the
entrypoint take their values from those, so a bad value stops the program at start with the variable's name
instead of a traceback later or a page that fails on every request.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from downloader.config import (
    DEFAULT_PRESETS,
    PodSettings,
    Settings,
    child_env,
    parse_presets,
    pod_port_url,
)
from downloader.errors import ConfigError
from downloader.service import DownloadService
from tests.conftest import REPO, cli_env, run_cli
from web import create_app
from web.auth import AuthConfig, resolve_auth

# --- "only config.py touches os.environ" ------------------------------------------------------------------
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def environment_readers(source: str) -> list[int]:
    """Line numbers where `source` touches the process environment through the os module."""
    tree = ast.parse(source)
    os_aliases = {"os"}
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_aliases |= {a.asname or a.name for a in node.names if a.name == "os"}
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            hits += [node.lineno for a in node.names if a.name in ENV_NAMES]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr in ENV_NAMES and isinstance(node.value, ast.Name)
                and node.value.id in os_aliases):
            hits.append(node.lineno)
    return sorted(hits)


@pytest.mark.parametrize("source", [
    "import os\nx = os.environ.get('A')",
    "import os\nx = dict(os.environ)",
    "import os\nx = os.getenv('A', '1')",
    "import os as o\nx = o.environ['A']",
    "from os import environ\nx = environ['A']",
    "from os import getenv as g\nx = g('A')",
    # What the UI's navigation did before this rule: a bad JUPYTER_PORT made every page a 500.
    "import os\nurl = int(os.environ.get(var) or default)",
])
def test_the_environment_check_finds_every_way_of_reading_it(source):
    assert environment_readers(source), f"not detected: {source!r}"


def test_the_environment_check_leaves_other_code_alone():
    assert environment_readers("import os\nx = os.path.join('a', 'b')\nenviron = {}\ny = environ.get('A')") == []


def test_only_config_reads_the_environment():
    sources = [*(REPO / "downloader").rglob("*.py"), *(REPO / "web").rglob("*.py"), REPO / "entrypoint.py"]
    readers = {
        str(p.relative_to(REPO)): lines
        for p in sources
        if p != REPO / "downloader" / "config.py" and (lines := environment_readers(p.read_text()))
    }
    assert not readers, f"read the environment in downloader/config.py (Settings, PodSettings, child_env): {readers}"


def test_child_processes_get_our_environment_plus_extras(monkeypatch):
    monkeypatch.setenv("SOME_USER_VARIABLE", "kept")
    env = child_env(WORKSPACE="/w", JUPYTER_TOKEN="t")
    assert env["SOME_USER_VARIABLE"] == "kept" and env["WORKSPACE"] == "/w" and env["JUPYTER_TOKEN"] == "t"


# --- every variable with a value that can be wrong: ConfigError naming it -------------------------------
SETTINGS_BAD = [
    ("ARIA2_CONNECTIONS", "many"), ("ARIA2_CONNECTIONS", "17"),
    ("ARIA2_MIN_SPLIT_SIZE", "32 megs"), ("ARIA2_MAX_DOWNLOAD_LIMIT", "fast"),
    ("DOWNLOADER_MAX_CONCURRENT", "abc"), ("DOWNLOADER_MAX_CONCURRENT", "0"),
    ("DOWNLOADER_MAX_ATTEMPTS", "1.5"), ("DOWNLOADER_STALL_SECONDS", "soon"), ("DOWNLOADER_STALL_SECONDS", "nan"),
    ("DOWNLOADER_RETRY_SECONDS", "-1"), ("ARIA2_MAX_TRIES", "x"), ("ARIA2_RETRY_WAIT", "2s"),
    ("DOWNLOADER_PORT", "abc"), ("DOWNLOADER_PORT", "70000"), ("JUPYTER_PORT", "abc"), ("COMFYUI_PORT", "0"),
    ("DOWNLOADER_CLAIM_LEASE", "soon"), ("DOWNLOADER_CLAIM_LEASE", "31"),
    ("HF_ENDPOINT", "huggingface.co"), ("HF_ENDPOINT", "ftp://mirror"), ("CIVITAI_ENDPOINT", "civitai.com"),
    ("CIVITAI_ENDPOINT", "https://civitai.com?x=1"), ("DOWNLOADER_ALLOWED_HOSTS", "cdn.example.com,ftp://x"),
    ("DOWNLOADER_ALLOWED_HOSTS", "https://user:pw@cdn.example.com"),
]
POD_BAD = [
    ("STOP_GRACE_SECONDS", "abc"), ("STOP_GRACE_SECONDS", "-5"), ("SERVICE_MAX_RESTARTS", "abc"),
    ("SERVICE_MAX_RESTARTS", "2.5"), ("SERVICE_STABLE_SECONDS", "a minute"), ("SERVICE_STABLE_SECONDS", "0"),
    ("ENABLE_JUPYTER", "maybe"), ("INSTALL_SAGEATTENTION", "maybe"),
    ("DOWNLOADER_PORT", "abc"), ("JUPYTER_PORT", "-1"), ("COMFYUI_PORT", "http"),
]
# Free text: any value is a value (paths, tokens, commands, URLs, names); nothing to reject at start.
FREE_TEXT = {
    "WORKSPACE", "MODELS_DIR", "DOWNLOADER_STATE", "DOWNLOADER_MANIFESTS", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
    "CIVITAI_TOKEN", "ARIA2C", "MODEL_PRESETS", "DOWNLOADER_AUTH", "DOWNLOADER_PASSWORD",
    "JUPYTER_PASSWORD", "RUNPOD_POD_ID", "DOWNLOADER_POD_ID", "COMFYUI_IMAGE_DIR", "COMFYUI_CMD", "COMFYUI_ARGS", "JUPYTER_CMD",
    "SAGEATTENTION_CMD", "CUSTOM_NODES",
}


def _variables_config_reads() -> set[str]:
    """Every name config.py looks up in an `env` mapping: env.get("X"), env["X"], "X" in env, helper(env, "X")."""
    names = set()
    for node in ast.walk(ast.parse((REPO / "downloader" / "config.py").read_text())):
        key = None
        if isinstance(node, ast.Call) and node.args:
            is_env_get = isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", None) == "env"
            first_is_env = getattr(node.args[0], "id", None) == "env" and len(node.args) > 1
            key = node.args[0] if is_env_get else node.args[1] if first_is_env else None
        elif isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "env":
            key = node.slice
        elif isinstance(node, ast.Compare) and any(getattr(c, "id", None) == "env" for c in node.comparators):
            key = node.left
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            names.add(key.value)
    return names


def test_every_variable_config_reads_is_checked_here():
    """A new variable needs a bad-value case below, or a place among the free-text ones."""
    read = _variables_config_reads()
    assert {"STOP_GRACE_SECONDS", "JUPYTER_PORT", "DOWNLOADER_AUTH", "RUNPOD_POD_ID"} <= read, read
    checked = {name for name, _ in SETTINGS_BAD + POD_BAD} | FREE_TEXT
    assert read == checked, f"unchecked: {sorted(read - checked)}; no longer read: {sorted(checked - read)}"


def _one_line_naming(error: ConfigError, name: str) -> str:
    message = str(error)
    assert name in message and "\n" not in message
    return message


@pytest.mark.parametrize(("name", "bad"), SETTINGS_BAD)
def test_a_bad_value_in_settings_names_the_variable(name, bad):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: bad})
    assert f"{name}=" in _one_line_naming(caught.value, name)


@pytest.mark.parametrize(("name", "bad"), POD_BAD)
def test_a_bad_value_in_pod_settings_names_the_variable(name, bad):
    with pytest.raises(ConfigError) as caught:
        PodSettings.from_env({name: bad})
    assert f"{name}=" in _one_line_naming(caught.value, name)


@pytest.mark.parametrize(("name", "bad", "expected"), [
    ("STOP_GRACE_SECONDS", "abc", "not a number"),
    ("SERVICE_MAX_RESTARTS", "abc", "not a whole number"),
    ("DOWNLOADER_MAX_CONCURRENT", "0", "out of range (1..16)"),
    ("JUPYTER_PORT", "abc", "not a port number (1..65535)"),
    ("ARIA2_MIN_SPLIT_SIZE", "big", "a size like 32M or 1G"),
    ("ENABLE_JUPYTER", "maybe", "use true or false"),
])
def test_the_message_says_what_was_expected(name, bad, expected):
    reader = PodSettings if name in {n for n, _ in POD_BAD} else Settings
    with pytest.raises(ConfigError, match=re.escape(expected)):
        reader.from_env({name: bad})


# --- what the parsed values mean (the README's defaults) -----------------------------------------------------
def test_defaults_when_nothing_is_set():
    settings, pod = Settings.from_env({}), PodSettings.from_env({})
    assert (settings.downloader_port, settings.jupyter_port, settings.comfy_port) == (8765, 8888, 8188)
    assert settings.ui_auth and settings.ui_password is None and settings.runpod_pod_id is None
    assert settings.model_presets is None, "unset: each command picks its own default"
    assert pod.presets == parse_presets(DEFAULT_PRESETS) == ("wan22-t2v-14b-fp8",)
    assert (pod.grace, pod.max_restarts) == (10.0, 5)


def test_values_are_carried_as_set():
    env = {"DOWNLOADER_PORT": "9000", "JUPYTER_PORT": "9001", "COMFYUI_PORT": "9002", "RUNPOD_POD_ID": "abc123",
           "MODEL_PRESETS": "a, b,none", "STOP_GRACE_SECONDS": "2.5", "SERVICE_MAX_RESTARTS": "0",
           "DOWNLOADER_AUTH": "None", "DOWNLOADER_PASSWORD": "pw", "JUPYTER_PASSWORD": "jpw"}
    settings, pod = Settings.from_env(env), PodSettings.from_env(env)
    assert (settings.downloader_port, settings.jupyter_port, settings.comfy_port) == (9000, 9001, 9002)
    assert settings.model_presets == pod.presets == ("a", "b")
    assert settings.runpod_pod_id == "abc123" and not settings.ui_auth
    assert (settings.ui_password, settings.jupyter_password) == ("pw", "jpw")
    assert (pod.grace, pod.max_restarts) == (2.5, 0)
    assert Settings.from_env({"MODEL_PRESETS": ""}).model_presets == (), "set but empty: no preset"


def test_secrets_never_show_in_the_settings_repr():
    settings = Settings.from_env({"DOWNLOADER_PASSWORD": "pw-secret-1", "JUPYTER_PASSWORD": "pw-secret-2",
                                  "HF_TOKEN": "hf_secret-3"})
    assert "secret" not in repr(settings)


def test_links_to_other_ports_go_through_runpods_proxy_when_on_runpod():
    assert pod_port_url("pod.example:8765", 8888, "http", "abc123") == "https://abc123-8888.proxy.runpod.net/"
    assert pod_port_url("pod.example:8765", 8888, "https") == "https://pod.example:8888/"


def test_password_comes_from_settings_in_order_and_a_generated_one_is_kept(tmp_path):
    def auth(**env: str) -> AuthConfig:
        return resolve_auth(Settings.from_env({"DOWNLOADER_STATE": str(tmp_path / "state"), **env}))

    assert auth(DOWNLOADER_PASSWORD="a", JUPYTER_PASSWORD="b") == AuthConfig("a", "DOWNLOADER_PASSWORD")
    assert auth(JUPYTER_PASSWORD="b") == AuthConfig("b", "JUPYTER_PASSWORD")
    first = auth()
    assert first.source == "generated" and len(first.password) >= 12 and auth().password == first.password
    assert (tmp_path / "state" / "ui-password").stat().st_mode & 0o777 == 0o600
    assert auth(DOWNLOADER_AUTH="none", DOWNLOADER_PASSWORD="a").password is None


def test_pages_take_their_links_from_the_settings_not_the_environment(settings, monkeypatch):
    """A JUPYTER_PORT the app was not started with cannot break a page: the UI never reads the environment."""
    monkeypatch.setenv("JUPYTER_PORT", "abc")
    monkeypatch.setenv("COMFYUI_PORT", "abc")
    settings = settings.with_(jupyter_port=9001, comfy_port=9002, runpod_pod_id="abc123")
    app = create_app(settings, DownloadService(settings), auth_config=AuthConfig(None, "none"))
    page = app.test_client().get("/downloads")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "https://abc123-9001.proxy.runpod.net/" in html and "https://abc123-9002.proxy.runpod.net/" in html


# --- the programs: exit 2, one line, no traceback ------------------------------------------------------------
def _one_line_error(res: subprocess.CompletedProcess[str], name: str) -> str:
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    lines = [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and name in lines[0], lines
    return lines[0]


@pytest.mark.parametrize(("command", "name", "bad"), [
    (["status"], "DOWNLOADER_MAX_CONCURRENT", "abc"),
    (["plan"], "ARIA2_CONNECTIONS", "lots"),
    (["fetch"], "DOWNLOADER_STALL_SECONDS", "never"),
    (["verify"], "ARIA2_MIN_SPLIT_SIZE", "huge"),
    (["presets"], "COMFYUI_PORT", "comfy"),
    (["serve"], "DOWNLOADER_PORT", "web"),
])
def test_every_cli_command_refuses_a_bad_variable_in_one_line(settings, command, name, bad):
    line = _one_line_error(run_cli(settings, *command, **{name: bad}), name)
    assert f"{name}={bad!r}" in line


def test_serve_with_a_bad_jupyter_port_exits_2_in_one_line(settings):
    line = _one_line_error(run_cli(settings, "serve", "--port", "1", JUPYTER_PORT="abc"), "JUPYTER_PORT")
    assert "JUPYTER_PORT='abc' is not a port number" in line
    assert not settings.state_dir.exists(), "stopped before it opened anything"


@pytest.mark.parametrize(("name", "bad", "expected"), [
    ("STOP_GRACE_SECONDS", "abc", "STOP_GRACE_SECONDS='abc' is not a number"),
    ("SERVICE_MAX_RESTARTS", "five", "SERVICE_MAX_RESTARTS='five' is not a whole number"),
    ("JUPYTER_PORT", "abc", "JUPYTER_PORT='abc' is not a port number"),
])
def test_the_entrypoint_refuses_a_bad_variable_in_one_line(settings, name, bad, expected):
    env = cli_env(settings, **{name: bad, "COMFYUI_IMAGE_DIR": str(settings.workspace / "image")})
    res = subprocess.run([sys.executable, str(REPO / "entrypoint.py")], env=env, cwd=settings.workspace, check=False,
                         capture_output=True, text=True, timeout=60)
    assert expected in _one_line_error(res, name)
    assert not Path(settings.state_dir).exists() and not (settings.workspace / "logs").exists(), "nothing started"


def test_endpoints_and_allowed_hosts_are_read_and_a_password_in_the_list_is_never_echoed():
    s = Settings.from_env({"CIVITAI_ENDPOINT": "http://127.0.0.1:8080/", "DOWNLOADER_ALLOWED_HOSTS": "cdn.example.com, http://10.0.0.5:8080"})
    assert s.civitai_endpoint == "http://127.0.0.1:8080"
    assert s.allowed_hosts == {("https", "cdn.example.com", 443), ("http", "10.0.0.5", 8080)}
    assert Settings.from_env({}).civitai_endpoint == "https://civitai.com" and Settings.from_env({}).allowed_hosts == set()
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DOWNLOADER_ALLOWED_HOSTS": "https://bob:hunter2@cdn.example.com"})
    assert "hunter2" not in str(caught.value) and "credentials" in str(caught.value)
