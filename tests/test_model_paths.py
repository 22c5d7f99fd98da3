"""ComfyUI's extra_model_paths.yaml: the entrypoint adds its own section and never loses what the user wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from downloader.pod.model_paths import BEGIN, FILE_NAME, OLD_HEADER, ensure_model_paths

USER_FILE = """\
# my own folders, with a comment I want to keep
comfyui:
    base_path: /workspace/shared/
    checkpoints: models/checkpoints/   # trailing comment
    loras: |
        models/loras
        models/more-loras
"""


@pytest.fixture
def comfy(tmp_path: Path) -> Path:
    (tmp_path / "ComfyUI" / "models").mkdir(parents=True)
    return tmp_path / "ComfyUI"


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_no_file_and_models_elsewhere_creates_our_section(comfy: Path, tmp_path: Path) -> None:
    models = tmp_path / "volume" / "models"
    message = ensure_model_paths(comfy, models)
    data = _yaml(comfy / FILE_NAME)
    assert data["downloader"]["base_path"] == str(models) and data["downloader"]["loras"] == "loras/"
    assert "reads models from" in message and not (comfy / f"{FILE_NAME}.bak").exists()


def test_models_in_comfyui_itself_touch_nothing(comfy: Path) -> None:
    (comfy / FILE_NAME).write_text(USER_FILE)
    assert ensure_model_paths(comfy, comfy / "models") is None
    assert (comfy / FILE_NAME).read_text() == USER_FILE


def test_the_users_entries_and_comments_survive_every_restart(comfy: Path, tmp_path: Path) -> None:
    path = comfy / FILE_NAME
    path.write_text(USER_FILE)
    first = tmp_path / "first"
    ensure_model_paths(comfy, first)
    text = path.read_text()
    assert text.startswith(USER_FILE), "the user's text stays byte for byte"
    assert (comfy / f"{FILE_NAME}.bak").read_text() == USER_FILE, "the file before the change is kept"
    data = _yaml(path)
    assert data["comfyui"]["checkpoints"] == "models/checkpoints/" and data["downloader"]["base_path"] == str(first)

    assert "unchanged" in ensure_model_paths(comfy, first)  # the next start: nothing to do
    assert path.read_text() == text

    path.write_text(text + "other:\n    base_path: /x/\n")  # the user adds more after our section
    second = tmp_path / "second"
    ensure_model_paths(comfy, second)  # MODELS_DIR moved: only our section changes
    data = _yaml(path)
    assert data["downloader"]["base_path"] == str(second)
    assert data["other"] == {"base_path": "/x/"} and path.read_text().startswith(USER_FILE)
    assert path.read_text().count(BEGIN) == 1


@pytest.mark.parametrize(
    "content, why",
    [
        ("comfyui: [unclosed\n", "not valid YAML"),
        ("downloader:\n    base_path: /mine/\n", "already has a `downloader:` section of yours"),
        ("- just\n- a list\n", "not a YAML mapping"),
        (f"{BEGIN}\ndownloader:\n  base_path: /x\n", "only one of the pod-downloader marker lines"),
    ],
    ids=["invalid", "users-own-section", "not-a-mapping", "broken-markers"],
)
def test_a_file_that_cannot_be_edited_safely_is_left_alone_and_we_say_what_to_add(
    comfy: Path, tmp_path: Path, content: str, why: str
) -> None:
    path = comfy / FILE_NAME
    path.write_text(content)
    message = ensure_model_paths(comfy, tmp_path / "models")
    assert path.read_text() == content and not (comfy / f"{FILE_NAME}.bak").exists()
    assert why in message and "left alone" in message and f"base_path: {tmp_path / 'models'}" in message


def test_the_file_an_earlier_version_wrote_is_ours_to_replace(comfy: Path, tmp_path: Path) -> None:
    path = comfy / FILE_NAME
    path.write_text(f"{OLD_HEADER}\ndownloader:\n  base_path: /old\n  loras: loras/\n")
    ensure_model_paths(comfy, tmp_path / "new")
    assert _yaml(path)["downloader"]["base_path"] == str(tmp_path / "new")
    assert OLD_HEADER not in path.read_text()
