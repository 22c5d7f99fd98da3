"""One readiness rule for ComfyUI: the rule itself on a real SQLite Store and a real manifest, then the
entrypoint's gate, the service's summary and /healthz agreeing on it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from downloader.config import PodSettings, Settings
from downloader.manifest import Catalog, load_catalog
from downloader.pod.entrypoint import Entrypoint
from downloader.readiness import NOT_QUEUED, missing, preset_requirements
from downloader.service import DownloadService
from downloader.state import DownloadState, Store
from web import create_app
from web.auth import AuthConfig

S = DownloadState
MANIFEST = """
    presets:
      base: {models: [model, lora]}
      other: {models: [extra]}
    models:
      - id: model
        source: https://example.invalid/model.bin
        dest: diffusion_models/model.safetensors
        size: 4
      - id: lora
        source: https://example.invalid/lora.bin
        dest: loras/lora.safetensors
        size: 4
        required: false
      - id: extra
        source: https://example.invalid/extra.bin
        dest: vae/extra.safetensors
        size: 4
"""


@pytest.fixture
def catalog(manifest, settings: Settings) -> Catalog:
    return load_catalog([manifest(MANIFEST)], settings.models_dir)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings.db_path) as s:
        yield s


def put(store: Store, models_dir: Path, model_id: str, dest: str, state: DownloadState | None,
        required: bool = True, on_disk: bool = False) -> None:
    """A download row moved through the real state machine to `state` (None: no row), and its file if asked."""
    if state is not None:
        store.upsert(model_id, source=f"https://example.invalid/{model_id}.bin", dest=dest, size=4, required=required)
        if state == S.DOWNLOADING:
            store.transition(model_id, S.DOWNLOADING, bytes_done=1)
        elif state == S.DONE:
            store.transition(model_id, S.DONE, "in place", bytes_done=4)
    if on_disk:
        (models_dir / dest).parent.mkdir(parents=True, exist_ok=True)
        (models_dir / dest).write_bytes(b"data")


def waiting(catalog: Catalog, store: Store, models_dir: Path, presets: tuple[str, ...]) -> dict[str, str]:
    """What the rule says ComfyUI waits for: id -> state as the placeholder page shows it."""
    return {m["id"]: m["state"] for m in missing(preset_requirements(catalog, presets), store.rows(), models_dir)}


# --- the rule ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "on_disk", "expected"),
    [
        (None, False, {"model": NOT_QUEUED}),
        (S.DOWNLOADING, False, {"model": "downloading"}),
        (S.DONE, False, {"model": "done"}),  # verified once, then the file was deleted
        (S.DONE, True, {}),
    ],
    ids=["not-queued", "downloading", "done-but-file-deleted", "done-and-in-place"],
)
def test_a_preset_model_counts_only_once_done_and_in_place(catalog, store, settings, state, on_disk, expected):
    put(store, settings.models_dir, "model", "diffusion_models/model.safetensors", state, on_disk=on_disk)
    assert waiting(catalog, store, settings.models_dir, ("base",)) == expected


def test_the_placeholder_rows_carry_progress_and_errors(catalog, store, settings):
    put(store, settings.models_dir, "model", "diffusion_models/model.safetensors", S.DOWNLOADING)
    store.update("model", error="slow mirror")
    rows = missing(preset_requirements(catalog, ("base",)), store.rows(), settings.models_dir)
    assert rows == [{"id": "model", "state": "downloading", "size": 4, "bytes_done": 1, "error": "slow mirror"}]
    # The other preset's model first, then the row marked required (it is one whichever preset queued it).
    rows = missing(preset_requirements(catalog, ("other",)), store.rows(), settings.models_dir)
    assert [m["id"] for m in rows] == ["extra", "model"]
    assert rows[0] == {"id": "extra", "state": NOT_QUEUED, "size": None, "bytes_done": 0, "error": None}


def test_a_download_the_user_marked_required_keeps_comfyui_waiting(catalog, store, settings):
    put(store, settings.models_dir, "mine", "checkpoints/mine.safetensors", S.DOWNLOADING)
    assert waiting(catalog, store, settings.models_dir, ()) == {"mine": "downloading"}
    store.transition("mine", S.VERIFYING)
    store.transition("mine", S.DONE, bytes_done=4)
    assert waiting(catalog, store, settings.models_dir, ()) == {"mine": "done"}, "done, but no file in place"
    put(store, settings.models_dir, "mine", "checkpoints/mine.safetensors", None, on_disk=True)
    assert waiting(catalog, store, settings.models_dir, ()) == {}


def test_downloads_not_required_are_ignored(catalog, store, settings):
    put(store, settings.models_dir, "lora", "loras/lora.safetensors", S.DOWNLOADING, required=False)
    store.upsert("mine", source="https://example.invalid/mine.bin", dest="loras/mine.safetensors", required=False)
    store.transition("mine", S.FAILED, error="404")
    put(store, settings.models_dir, "model", "diffusion_models/model.safetensors", S.DONE, on_disk=True)
    assert waiting(catalog, store, settings.models_dir, ("base",)) == {}


def test_no_preset_and_nothing_required_is_ready(catalog, store, settings):
    assert preset_requirements(catalog, ()) == [], "no preset must not mean every model of the catalog"
    assert waiting(catalog, store, settings.models_dir, ()) == {}


def test_an_unknown_preset_is_ignored_by_the_rule(catalog, store, settings):
    assert waiting(catalog, store, settings.models_dir, ("no-such-preset",)) == {}
    assert waiting(catalog, store, settings.models_dir, ("no-such-preset", "other")) == {"extra": NOT_QUEUED}


def test_the_rule_loads_neither_sqlalchemy_nor_pydantic_on_import():
    """The entrypoint starts JupyterLab before those are loaded: the rule must not drag them in early."""
    code = "import sys, downloader.readiness; print(sorted(m for m in ('sqlalchemy', 'pydantic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- the three users agree ------------------------------------------------------------------------------


def test_entrypoint_summary_and_healthz_agree(manifest, settings):
    path = manifest(MANIFEST)
    settings = settings.with_(manifest_dirs=(path,), model_presets=("base",))
    svc = DownloadService(settings, catalog=load_catalog([path], settings.models_dir))  # not started: no aria2
    client = create_app(settings, svc, auth_config=AuthConfig("pw", "DOWNLOADER_PASSWORD")).test_client()
    pod = Entrypoint(PodSettings.from_env({"WORKSPACE": str(settings.workspace), "MODEL_PRESETS": "base"}), settings)
    pod.open_store()
    pod.resolve_required()
    try:

        def views() -> tuple[bool, bool, bool, bool]:
            health = client.get("/healthz").get_json()
            summary = svc.summary()
            assert health["required_done"] == health["comfyui_ready"]
            assert summary["required_done"] == summary["comfyui_ready"]
            return health["comfyui_ready"], summary["comfyui_ready"], not pod.missing(), not svc.missing()

        models_dir = settings.models_dir
        assert views() == (False,) * 4, "the preset's required model is not queued yet"
        put(svc.store, models_dir, "model", "diffusion_models/model.safetensors", S.DOWNLOADING)
        assert views() == (False,) * 4
        svc.store.transition("model", S.VERIFYING)
        svc.store.transition("model", S.DONE, bytes_done=4)
        assert views() == (False,) * 4, "done in the DB but no file in place"
        put(svc.store, models_dir, "model", "diffusion_models/model.safetensors", None, on_disk=True)
        assert views() == (True,) * 4
        put(svc.store, models_dir, "mine", "checkpoints/mine.safetensors", S.DOWNLOADING)
        assert views() == (False,) * 4, "a download the user started, marked required"
        assert [m["id"] for m in pod.missing()] == [m["id"] for m in svc.missing()] == ["mine"]
    finally:
        pod.store.close()
        svc.stop()
