"""Manifests: every bad one gets one clear error naming file, model id, field (and line); the shipped WAN 2.2 facts.

Library tests load real files from tmp with `load_catalog`; CLI tests drive `downloader.cli.main` through click's
CliRunner with WORKSPACE / MODELS_DIR / DOWNLOADER_STATE in tmp and check what a user sees and that nothing was
downloaded or queued.
"""

from __future__ import annotations

import re
import sqlite3
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from downloader.cli import main
from downloader.errors import ManifestError, UnknownPresetError
from downloader.manifest import Catalog, HfSource, check_dest, confine, load_catalog

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "manifests"
WAN22 = SHIPPED / "wan22.yaml"
COMFY_FOLDERS = {"diffusion_models", "text_encoders", "vae", "loras"}
SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4


# --- helpers -----------------------------------------------------------------------------------------------------


def write(folder: Path, name: str, text: str) -> Path:
    """Write a manifest; `text` is dedented so line numbers in the tests are the file's line numbers."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def model(model_id: str, **fields: str | None) -> str:
    """One model as YAML lines: `- id` first, then source (next line), dest (the one after), then the extras.

    Values are raw YAML (so a test controls quoting); None leaves a field out.
    """
    merged: dict[str, str | None] = {
        "source": f"hf://owner/repo/files/{model_id}.safetensors",
        "dest": f"diffusion_models/{model_id}.safetensors",
    }
    merged.update(fields)
    lines = [f"  - id: {model_id}"] + [f"    {k}: {v}" for k, v in merged.items() if v is not None]
    return "\n".join(lines) + "\n"


def models_yaml(*blocks: str, presets: str = "") -> str:
    """A manifest text: optional `presets:` block first, then `models:` (line 1 when there are no presets)."""
    return (presets or "") + "models:\n" + "".join(blocks)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ComfyUI" / "models"
    for folder in COMFY_FOLDERS:
        (d / folder).mkdir(parents=True)
    return d


def load_error(paths: list[Path], models_dir: Path) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load_catalog(paths, models_dir)
    return info.value


def check_error(
    err: ManifestError,
    *,
    path: Path,
    model_id: str | None,
    field: str | None,
    line: int | None | tuple[int | None, ...],
    says: tuple[str, ...] = (),
) -> None:
    """The attributes, and the one line a user reads: file (with line when known), model id, field, the reason.

    `line` as a tuple lists acceptable values (None = "no line given" is tolerated where the loader has no node).
    """
    assert err.file == str(path)
    assert err.model_id == model_id
    assert err.field == field
    lines = line if isinstance(line, tuple) else (line,)
    assert err.line in lines, f"line {err.line}, expected one of {lines}"
    text = str(err)
    assert "\n" not in text, "an error must be one line"
    assert text.startswith(str(path)), text
    if err.line is not None:
        assert text.startswith(f"{path}:{err.line}"), text  # path:line, what editors and terminals jump to
    if model_id is not None:
        assert f"model {model_id!r}" in text, text
    if field is not None:
        assert f"field {field!r}" in text, text
    for fragment in says:
        assert fragment in text, f"{fragment!r} not in {text!r}"


# --- a good manifest -------------------------------------------------------------------------------------------


def test_valid_manifest_loads_with_defaults_and_normalised_values(tmp_path: Path, models_dir: Path) -> None:
    path = write(
        tmp_path,
        "good.yaml",
        models_yaml(
            model("base", sha256=SHA_A.upper(), size="1024", revision="main", description='"the base"'),
            model(
                "lora",
                source="https://cdn.example.com/files/lora.safetensors?download=true",
                dest="./loras//lora.safetensors",
                required="false",
            ),
            presets="presets:\n  as-list: [base]\n  as-dict:\n    description: both\n    models: [lora, base]\n",
        ),
    )
    catalog = load_catalog([path], models_dir)
    base, lora = catalog.models["base"], catalog.models["lora"]
    assert list(catalog.models) == ["base", "lora"]
    assert base.sha256 == SHA_A  # uppercase accepted, stored lowercase
    assert base.size == 1024 and base.revision == "main" and base.description == "the base"
    assert base.required is True  # the default
    assert base.parsed_source == HfSource(repo_id="owner/repo", path="files/base.safetensors")
    assert base.manifest == str(path)
    assert lora.required is False and lora.sha256 is None and lora.size is None
    assert lora.dest == "loras/lora.safetensors"  # `./` and `//` normalised away
    assert str(lora.parsed_source) == "https://cdn.example.com/files/lora.safetensors?download=true"
    assert confine(models_dir, lora.dest) == models_dir / "loras" / "lora.safetensors"
    assert catalog.presets["as-list"].models == ["base"]
    assert catalog.presets["as-dict"].models == ["lora", "base"]
    assert catalog.presets["as-dict"].description == "both"
    assert catalog.files == [path]


@pytest.mark.parametrize("text", ["", "\n", "# nothing here yet\n", "presets: {}\nmodels: []\n"])
def test_empty_manifest_is_valid_and_has_no_models(tmp_path: Path, models_dir: Path, text: str) -> None:
    path = write(tmp_path, "empty.yaml", text)
    catalog = load_catalog([path], models_dir)
    assert catalog.models == {} and catalog.presets == {}
    assert catalog.files == [path]
    assert catalog.select() == []


def test_folder_of_manifests_loads_yaml_and_yml_sorted_and_presets_reach_across_files(
    tmp_path: Path, models_dir: Path
) -> None:
    folder = tmp_path / "manifests"
    b = write(folder, "b.yml", models_yaml(model("from-b")))
    a = write(folder, "a.yaml", models_yaml(model("from-a"), presets="presets:\n  both: [from-a, from-b]\n"))
    write(folder, "notes.txt", "this: is not: a manifest\n")  # ignored: not *.yaml / *.yml
    catalog = load_catalog([folder], models_dir)
    assert catalog.files == [a, b]
    assert [m.id for m in catalog.select(["both"])] == ["from-a", "from-b"]
    assert catalog.models["from-b"].manifest == str(b)


# --- YAML-level errors ---------------------------------------------------------------------------------------


def test_yaml_syntax_error_names_the_file_and_the_line(tmp_path: Path, models_dir: Path) -> None:
    path = write(
        tmp_path,
        "syntax.yaml",
        """\
        models:
          - id: m1
            source: hf://owner/repo/m1.safetensors
            dest: diffusion_models/m1.safetensors
            description: WAN: the big one
          - id: m2
        """,
    )
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id=None, field=None, line=5, says=("YAML syntax error", "mapping values"))


def test_tab_indentation_is_a_syntax_error_on_its_line(tmp_path: Path, models_dir: Path) -> None:
    path = write(tmp_path, "tabs.yaml", "models:\n  - id: m1\n\tsource: hf://owner/repo/m1.bin\n")
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id=None, field=None, line=3, says=("YAML syntax error", "'\\t'"))


def test_wrong_indentation_is_a_syntax_error_on_its_line(tmp_path: Path, models_dir: Path) -> None:
    path = write(
        tmp_path,
        "indent.yaml",
        "models:\n  - id: m1\n    source: hf://owner/repo/m1.bin\n   dest: diffusion_models/m1.bin\n",
    )
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id=None, field=None, line=4, says=("YAML syntax error",))


def test_unclosed_quote_points_at_the_line_where_the_quote_opens(tmp_path: Path, models_dir: Path) -> None:
    text = (
        "models:\n"
        "  - id: m1\n"
        '    description: "the base model\n'  # line 3: the quote never closes
        "    source: hf://owner/repo/m1.bin\n"
        "    dest: diffusion_models/m1.bin\n"
        "  - id: m2\n"
        "    source: hf://owner/repo/m2.bin\n"
        "    dest: diffusion_models/m2.bin\n"
    )
    path = write(tmp_path, "quote.yaml", text)
    err = load_error([path], models_dir)
    assert err.file == str(path)
    assert err.line == 3 or "line 3" in str(err)  # today: 'quote.yaml:9: ... found unexpected end of stream'


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, models_dir: Path, text: str) -> None:
    path = write(tmp_path, "top.yaml", text)
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id=None, field=None, line=1, says=("top level must be a mapping",))


def test_unknown_top_level_key_is_named_with_its_line(tmp_path: Path, models_dir: Path) -> None:
    path = write(tmp_path, "top.yaml", models_yaml(model("m1")) + "preset:\n  x: [m1]\n")  # `preset` typo, line 5
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id=None, field="preset", line=5, says=("unknown key 'preset'",))


def test_unknown_model_key_names_model_field_and_line(tmp_path: Path, models_dir: Path) -> None:
    path = write(tmp_path, "typo.yaml", models_yaml(model("m0"), model("m1", size="10", sha265=SHA_A)))
    # m1 starts at line 5: id 5, source 6, dest 7, size 8, sha265 9
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="m1", field="sha265", line=9, says=("unknown key 'sha265'",))


def test_unknown_key_in_a_preset_is_named(tmp_path: Path, models_dir: Path) -> None:
    presets = "presets:\n  p:\n    models: [m1]\n    desc: typo\n"
    path = write(tmp_path, "preset.yaml", models_yaml(model("m1"), presets=presets))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id=None, field="presets.p", line=4, says=("unknown key 'desc'",))


def test_duplicate_top_level_key_is_refused_not_silently_merged(tmp_path: Path, models_dir: Path) -> None:
    # PyYAML alone would keep only the second `models:` and m1 would silently vanish.
    path = write(tmp_path, "dup.yaml", models_yaml(model("m1")) + models_yaml(model("m2")))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id=None, field="models", line=5, says=("'models' appears twice",))


def test_duplicate_key_inside_a_model_is_refused_with_its_line(tmp_path: Path, models_dir: Path) -> None:
    text = models_yaml(model("m1"), model("m2")) + "    dest: vae/m2.safetensors\n"  # second dest of m2, line 8
    path = write(tmp_path, "dup.yaml", text)
    err = load_error([path], models_dir)
    assert err.file == str(path) and err.line == 8
    assert str(err).startswith(f"{path}:8") and "'dest' appears twice" in str(err)


def test_duplicate_key_inside_a_model_names_the_model_and_field(tmp_path: Path, models_dir: Path) -> None:
    text = models_yaml(model("m1"), model("m2")) + "    dest: vae/m2.safetensors\n"
    path = write(tmp_path, "dup.yaml", text)
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="m2", field="dest", line=8, says=("appears twice",))


def test_duplicate_preset_name_in_one_file_is_refused(tmp_path: Path, models_dir: Path) -> None:
    presets = "presets:\n  p: [m1]\n  p: [m1]\n"
    path = write(tmp_path, "dup.yaml", models_yaml(model("m1"), presets=presets))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id=None, field="p", line=3, says=("'p' appears twice",))


def test_recursive_yaml_alias_is_a_manifest_error(tmp_path: Path, models_dir: Path) -> None:
    path = write(tmp_path, "loop.yaml", "models: &x [*x]\n")
    err = load_error([path], models_dir)
    assert err.file == str(path)


def test_missing_manifest_file_is_named(tmp_path: Path, models_dir: Path) -> None:
    missing = tmp_path / "nope" / "wan23.yaml"
    err = load_error([missing], models_dir)
    check_error(err, path=missing, model_id=None, field=None, line=None, says=("not found",))


def test_unreadable_manifest_is_named(tmp_path: Path, models_dir: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"models: []\n# caf\xe9\n")  # not UTF-8
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id=None, field=None, line=None, says=("cannot read",))


# --- ids, dests and presets must be unique ------------------------------------------------------------------------


def test_duplicate_id_in_one_file(tmp_path: Path, models_dir: Path) -> None:
    path = write(tmp_path, "dup.yaml", models_yaml(model("m1"), model("m1", dest="vae/other.safetensors")))
    err = load_error([path], models_dir)
    says = ("duplicate id", "earlier in this file")
    check_error(err, path=path, model_id="m1", field="id", line=(None, 5), says=says)


def test_duplicate_id_across_files_names_the_other_file(tmp_path: Path, models_dir: Path) -> None:
    first = write(tmp_path, "first.yaml", models_yaml(model("umt5")))
    second = write(tmp_path, "second.yaml", models_yaml(model("other"), model("umt5", dest="text_encoders/u.bin")))
    err = load_error([first, second], models_dir)
    check_error(err, path=second, model_id="umt5", field="id", line=(None, 5), says=("duplicate id", f"in {first}"))


@pytest.mark.parametrize(
    "second_dest", ["vae/shared.safetensors", "./vae/shared.safetensors", "vae//shared.safetensors"]
)
def test_duplicate_dest_is_refused_even_when_spelled_differently(
    tmp_path: Path, models_dir: Path, second_dest: str
) -> None:
    first = write(tmp_path, "first.yaml", models_yaml(model("a", dest="vae/shared.safetensors")))
    second = write(tmp_path, "second.yaml", models_yaml(model("b", dest=second_dest)))
    err = load_error([first, second], models_dir)
    check_error(
        err, path=second, model_id="b", field="dest", line=(None, 4), says=("'vae/shared.safetensors'", "model 'a'")
    )


def test_same_preset_name_in_two_files_is_refused(tmp_path: Path, models_dir: Path) -> None:
    first = write(tmp_path, "first.yaml", models_yaml(model("a"), presets="presets:\n  wan: [a]\n"))
    second = write(tmp_path, "second.yaml", models_yaml(model("b"), presets="presets:\n  wan: [b]\n"))
    err = load_error([first, second], models_dir)
    check_error(err, path=second, model_id=None, field="presets.wan", line=(None, 2), says=(f"defined in {first}",))


def test_unknown_id_in_a_preset_names_preset_and_id(tmp_path: Path, models_dir: Path) -> None:
    presets = "presets:\n  t2v: [m1, wan22-t2v-hihg]\n"
    path = write(tmp_path, "p.yaml", models_yaml(model("m1"), presets=presets))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id=None, field="presets.t2v", line=(None, 2), says=("'wan22-t2v-hihg'",))


def test_preset_may_use_models_of_another_file(tmp_path: Path, models_dir: Path) -> None:
    presets_only = write(tmp_path, "a-presets.yaml", "presets:\n  mine: [from-b]\n")
    models_only = write(tmp_path, "b-models.yaml", models_yaml(model("from-b")))
    catalog = load_catalog([presets_only, models_only], models_dir)
    assert [m.id for m in catalog.select(["mine"])] == ["from-b"]


# --- dest confinement ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dest", "reason"),
    [
        ("../escape.safetensors", "'..'"),
        ("loras/../../escape.safetensors", "'..'"),
        ("/etc/cron.d/evil", "absolute"),
        ("C:\\x", "'/' separators"),
        ("C:/models/x.safetensors", "absolute"),
        ("loras\\x.safetensors", "'/' separators"),
        ("", "non-empty"),
        ("loras/", "must name a file"),
        (".", "must name a file"),
        ("loras/x.safetensors.part", "partial downloads"),
        ("loras/x.safetensors.aria2", "partial downloads"),
        ("loras/x.safetensors.part.aria2", "partial downloads"),
    ],
)
def test_bad_dest_is_refused(tmp_path: Path, models_dir: Path, dest: str, reason: str) -> None:
    path = write(tmp_path, "dest.yaml", models_yaml(model("m0"), model("bad-dest", dest=f"'{dest}'")))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="bad-dest", field="dest", line=7, says=(reason,))
    with pytest.raises(ValueError):
        check_dest(dest)


@pytest.mark.parametrize("value", ["", "42", "[a, b]"])
def test_dest_that_is_not_a_string_or_missing_value_is_refused(tmp_path: Path, models_dir: Path, value: str) -> None:
    path = write(tmp_path, "dest.yaml", models_yaml(model("m1", dest=value)))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="m1", field="dest", line=4)


def test_dest_naming_a_folder_with_trailing_dot_is_refused(tmp_path: Path, models_dir: Path) -> None:
    path = write(tmp_path, "dest.yaml", models_yaml(model("m1", dest="loras/.")))
    with pytest.raises(ManifestError):
        load_catalog([path], models_dir)  # today: accepted, stored as dest 'loras', the existing loras/ folder


def test_dest_through_symlinked_folder_pointing_outside_is_refused(tmp_path: Path, models_dir: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (models_dir / "checkpoints").symlink_to(outside, target_is_directory=True)
    path = write(tmp_path, "sym.yaml", models_yaml(model("ckpt", dest="checkpoints/sub/x.safetensors")))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="ckpt", field="dest", line=(None, 4), says=("outside the models dir",))
    assert list(outside.iterdir()) == []  # nothing was created out there


def test_dest_that_is_a_symlink_to_a_file_outside_is_refused(tmp_path: Path, models_dir: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("keep me")
    (models_dir / "vae" / "x.safetensors").symlink_to(secret)
    path = write(tmp_path, "sym.yaml", models_yaml(model("vae-x", dest="vae/x.safetensors")))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="vae-x", field="dest", line=(None, 4), says=("symlink", "outside"))
    assert secret.read_text() == "keep me"


def test_dest_under_symlinked_folder_pointing_inside_is_allowed(tmp_path: Path, models_dir: Path) -> None:
    shared = models_dir / "shared" / "loras"
    shared.mkdir(parents=True)
    (models_dir / "wan_loras").symlink_to(shared, target_is_directory=True)
    path = write(tmp_path, "sym.yaml", models_yaml(model("lora", dest="wan_loras/x.safetensors")))
    catalog = load_catalog([path], models_dir)
    target = confine(models_dir, catalog.models["lora"].dest)
    assert target == models_dir / "wan_loras" / "x.safetensors"
    assert target.resolve() == shared.resolve() / "x.safetensors"


def test_models_dir_that_is_itself_a_symlink_is_fine(tmp_path: Path) -> None:
    real = tmp_path / "volume" / "models"
    (real / "vae").mkdir(parents=True)
    link = tmp_path / "models-link"
    link.symlink_to(real, target_is_directory=True)
    path = write(tmp_path, "m.yaml", models_yaml(model("v", dest="vae/v.safetensors")))
    catalog = load_catalog([path], link)
    assert confine(link, catalog.models["v"].dest).resolve() == real.resolve() / "vae" / "v.safetensors"


def test_over_long_file_name_in_dest_is_a_manifest_error(tmp_path: Path, models_dir: Path) -> None:
    dest = "diffusion_models/" + "w" * 300 + ".safetensors"
    path = write(tmp_path, "long.yaml", models_yaml(model("long", dest=dest)))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="long", field="dest", line=(None, 4))


def test_symlink_loop_in_models_dir_is_a_manifest_error(tmp_path: Path, models_dir: Path) -> None:
    (models_dir / "loop").symlink_to(models_dir / "loop")
    path = write(tmp_path, "loop.yaml", models_yaml(model("m1", dest="loop/m1.safetensors")))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="m1", field="dest", line=(None, 4))


# --- field values ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["abc123", "g" * 64, "a" * 63, "a" * 65, f"'{SHA_A[:-1]} '", "12345", f"sha256:{SHA_A}", "[a]"],
)
def test_malformed_sha256_is_refused(tmp_path: Path, models_dir: Path, value: str) -> None:
    path = write(tmp_path, "sha.yaml", models_yaml(model("m1", size="5", sha256=value)))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="m1", field="sha256", line=6, says=("sha256",))


@pytest.mark.parametrize("value", [SHA_B.upper(), f"' {SHA_B} '", SHA_B])
def test_sha256_accepted_in_any_case_and_stored_lowercase(tmp_path: Path, models_dir: Path, value: str) -> None:
    path = write(tmp_path, "sha.yaml", models_yaml(model("m1", sha256=value)))
    assert load_catalog([path], models_dir).models["m1"].sha256 == SHA_B


@pytest.mark.parametrize("value", ["'1024'", "1.5", "true", "-1", "0", "1GB", "null_size"])
def test_size_must_be_a_positive_integer(tmp_path: Path, models_dir: Path, value: str) -> None:
    path = write(tmp_path, "size.yaml", models_yaml(model("m1", size=value)))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="m1", field="size", line=5)


@pytest.mark.parametrize("value", ["'yes'", "'true'", "1", "0", "maybe"])
def test_required_must_be_a_bool(tmp_path: Path, models_dir: Path, value: str) -> None:
    path = write(tmp_path, "req.yaml", models_yaml(model("m1", required=value)))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="m1", field="required", line=5)


@pytest.mark.parametrize(("missing", "line"), [("source", 2), ("dest", 2)])
def test_model_missing_a_required_field(tmp_path: Path, models_dir: Path, missing: str, line: int) -> None:
    path = write(tmp_path, "missing.yaml", models_yaml(model("m1", **{missing: None})))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="m1", field=missing, line=line, says=("required",))


def test_model_missing_its_id_is_named_by_position(tmp_path: Path, models_dir: Path) -> None:
    text = models_yaml(model("m1")) + "  - source: hf://owner/repo/x.bin\n    dest: vae/x.bin\n"
    path = write(tmp_path, "noid.yaml", text)
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="#2", field="id", line=5, says=("required",))


@pytest.mark.parametrize("bad_id", ["'has space'", "-leading-dash", "a/b", "''"])
def test_model_id_must_be_a_simple_name(tmp_path: Path, models_dir: Path, bad_id: str) -> None:
    text = "models:\n  - id: " + bad_id + "\n    source: hf://owner/repo/x.bin\n    dest: vae/x.bin\n"
    path = write(tmp_path, "id.yaml", text)
    err = load_error([path], models_dir)
    assert err.file == str(path) and err.field == "id" and err.line == 2
    assert f"{path}:2" in str(err) and "field 'id'" in str(err)


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("ftp://files.example.com/x.safetensors", "hf://owner/repo/path or an http(s):// URL"),
        ("file:///etc/passwd", "hf://owner/repo/path or an http(s):// URL"),
        ("/local/x.safetensors", "hf://owner/repo/path or an http(s):// URL"),
        ("https:///no-host.bin", "hf://owner/repo/path or an http(s):// URL"),
        ("hf://Comfy-Org/Wan_2.2_ComfyUI_Repackaged", "hf://owner/repo/path/in/repo"),
        ("hf://Comfy-Org", "hf://owner/repo/path/in/repo"),
        ("hf://owner//x.safetensors", "hf://owner/repo/path/in/repo"),
        ("hf://owner/repo/../x.safetensors", "'..'"),
    ],
)
def test_bad_source_is_refused(tmp_path: Path, models_dir: Path, source: str, says: str) -> None:
    path = write(tmp_path, "src.yaml", models_yaml(model("m1", source=f"'{source}'")))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="m1", field="source", line=3, says=(says,))


@pytest.mark.parametrize(
    ("source", "secret"),
    [
        ("https://alice:s3cr3t-pw@cdn.example.com/x.safetensors", "s3cr3t-pw"),
        ("https://hf_abcdefSECRET@huggingface.co/x.safetensors", "hf_abcdefSECRET"),
        ("https://civitai.com/api/download/models/1?token=SECRETTOKEN1", "SECRETTOKEN1"),
        ("https://civitai.com/api/download/models/1?type=Model&TOKEN=SECRETTOKEN2", "SECRETTOKEN2"),
        ("https://example.com/x.bin?access_token=SECRETTOKEN3", "SECRETTOKEN3"),
        ("https://example.com/x.bin?api_key=SECRETTOKEN4", "SECRETTOKEN4"),
        ("https://example.com/x.bin?%74oken=SECRETTOKEN5", "SECRETTOKEN5"),
    ],
)
def test_credentials_in_url_are_refused_and_not_echoed(
    tmp_path: Path, models_dir: Path, source: str, secret: str
) -> None:
    path = write(tmp_path, "cred.yaml", models_yaml(model("m1", source=f"'{source}'")))
    err = load_error([path], models_dir)
    check_error(err, path=path, model_id="m1", field="source", line=3, says=("TOKEN",))
    assert secret not in str(err)  # the error itself must not leak what it refuses to store


def test_ordinary_query_strings_are_fine(tmp_path: Path, models_dir: Path) -> None:
    source = "https://files.example.com/get?name=lora.safetensors&v=2"
    path = write(tmp_path, "q.yaml", models_yaml(model("m1", source=f"'{source}'")))
    assert load_catalog([path], models_dir).models["m1"].source == source


# --- pasted links are stored in their canonical form -------------------------------------------------------------
@pytest.mark.parametrize(
    ("pasted", "source", "revision"),
    [
        ("https://civitai.com/api/download/models/1?type=Model&format=SafeTensor", "civitai:1?type=Model&format=SafeTensor", None),
        ("https://civitai.com/models/4201/some-lora?modelVersionId=130072", "civitai:130072", None),
        ("urn:air:wan:lora:civitai:4201@130072+555", "civitai:130072+555", None),
        ("civitai:130072", "civitai:130072", None),
        ("https://huggingface.co/Comfy-Org/Wan_2.2/blob/main/split_files/vae/wan_2.1_vae.safetensors",
         "hf://Comfy-Org/Wan_2.2/split_files/vae/wan_2.1_vae.safetensors", "main"),
        ("https://huggingface.co/o/r/resolve/abc123/x.safetensors?download=true", "hf://o/r/x.safetensors", "abc123"),
    ],
)
def test_pasted_links_are_stored_canonical(tmp_path: Path, models_dir: Path, pasted: str, source: str, revision) -> None:
    path = write(tmp_path, "p.yaml", models_yaml(model("m1", source=f"'{pasted}'")))
    spec = load_catalog([path], models_dir).models["m1"]
    assert (spec.source, spec.revision) == (source, revision)


def test_links_on_the_configured_endpoints_are_hub_and_civitai_sources(tmp_path: Path, models_dir: Path) -> None:
    from downloader.manifest import Endpoints

    endpoints = Endpoints(hf="http://127.0.0.1:9001", civitai="http://127.0.0.1:9002")
    hub = "http://127.0.0.1:9001/o/r/blob/v1/x.safetensors"
    civ = "http://127.0.0.1:9002/api/download/models/77"
    path = write(tmp_path, "e.yaml", models_yaml(model("m1", source=f"'{hub}'"), model("m2", source=f"'{civ}'", dest="loras/b.safetensors")))
    catalog = load_catalog([path], models_dir, endpoints)
    assert (catalog.models["m1"].source, catalog.models["m1"].revision) == ("hf://o/r/x.safetensors", "v1")
    assert catalog.models["m2"].source == "civitai:77"
    # Another port of the endpoint's host is a plain URL, not the hub.
    other = write(tmp_path, "o.yaml", models_yaml(model("m3", source="'http://127.0.0.1:9003/o/r/blob/v1/x.safetensors'", dest="loras/c.safetensors")))
    assert load_catalog([other], models_dir, endpoints).models["m3"].source.startswith("http://127.0.0.1:9003/")


def test_a_civitai_source_may_leave_dest_out_and_others_may_not(tmp_path: Path, models_dir: Path) -> None:
    text = "models:\n  - id: lora1\n    source: civitai:130072\n"
    catalog = load_catalog([write(tmp_path, "c.yaml", text)], models_dir)
    assert catalog.models["lora1"].dest is None
    bad = write(tmp_path, "d.yaml", "models:\n  - id: plain\n    source: hf://o/r/x.safetensors\n")
    check_error(load_error([bad], models_dir), path=bad, model_id="plain", field="dest", line=(2, 3), says=("dest is required",))


def test_a_hub_link_and_a_revision_that_disagree_are_refused(tmp_path: Path, models_dir: Path) -> None:
    link = "https://huggingface.co/o/r/blob/v1/x.safetensors"
    path = write(tmp_path, "r.yaml", models_yaml(model("m1", source=f"'{link}'", revision="v2")))
    check_error(load_error([path], models_dir), path=path, model_id="m1", field=None, line=2, says=("'v1'", "'v2'"))


@pytest.mark.parametrize(
    ("pasted", "says"),
    [
        ("https://civitai.com/models/4201/some-lora", "modelVersionId"),
        ("https://huggingface.co/datasets/o/d/blob/main/x.json", "dataset"),
        ("https://huggingface.co/o/r/tree/main/split_files", "not one file"),
        ("civitai:abc", "civitai:<modelVersionId>"),
    ],
)
def test_links_that_name_no_file_say_what_to_paste(tmp_path: Path, models_dir: Path, pasted: str, says: str) -> None:
    path = write(tmp_path, "n.yaml", models_yaml(model("m1", source=f"'{pasted}'")))
    check_error(load_error([path], models_dir), path=path, model_id="m1", field="source", line=3, says=(says,))


# --- selection ----------------------------------------------------------------------------------------------------


@pytest.fixture
def overlapping(tmp_path: Path, models_dir: Path) -> Catalog:
    presets = textwrap.dedent(
        """\
        presets:
          late: [vae, high]
          early:
            description: dict form
            models: [low, vae, high]
        """
    )
    text = models_yaml(*(model(i, dest=f"vae/{i}.bin") for i in ("high", "low", "vae", "lora")), presets=presets)
    return load_catalog([write(tmp_path, "sel.yaml", text)], models_dir)


def test_select_returns_each_model_once_in_manifest_order(overlapping: Catalog) -> None:
    assert [m.id for m in overlapping.select(["late", "early"])] == ["high", "low", "vae"]
    assert [m.id for m in overlapping.select(["late"], only=["lora", "vae"])] == ["high", "vae", "lora"]
    assert [m.id for m in overlapping.select(only=["lora"])] == ["lora"]
    assert [m.id for m in overlapping.select()] == ["high", "low", "vae", "lora"]
    assert overlapping.presets_of("vae") == ["late", "early"]


def test_select_unknown_preset_lists_the_known_ones(overlapping: Catalog) -> None:
    with pytest.raises(UnknownPresetError) as info:
        overlapping.select(["wan22-t2v"])
    assert "unknown preset 'wan22-t2v'" in str(info.value)
    assert "known presets: early, late" in str(info.value)


def test_select_unknown_only_id_is_refused(overlapping: Catalog) -> None:
    with pytest.raises(UnknownPresetError) as info:
        overlapping.select(["late"], only=["vea"])
    assert "unknown model id 'vea'" in str(info.value)


def test_select_unknown_preset_when_no_presets_exist(tmp_path: Path, models_dir: Path) -> None:
    catalog = load_catalog([write(tmp_path, "m.yaml", models_yaml(model("m1")))], models_dir)
    with pytest.raises(UnknownPresetError, match=r"known presets: none"):
        catalog.select(["anything"])


# --- the shipped WAN 2.2 manifest -----------------------------------------------------------------------------------

# (bytes, sha256) of every file, from the reference table (shared/reference/wan-models.md).
WAN_FILES = {
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": (
        14_293_923_632,
        "cad711ae211c8b23455ec68cd6a190a33a3d874234a77eb57266d73f8f0e6c9f",
    ),
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": (
        14_293_923_632,
        "e71b96d7c82e638694c5e7fb98fac4bfb0e4ddc5fbbb4b1df40da8f0f1278a97",
    ),
    "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors": (
        14_294_742_832,
        "6122e79d55e0f235698d11d657f3b196c5273c830da00b2b013c5a048d5e6a42",
    ),
    "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors": (
        14_294_742_832,
        "5471a457b6ac404202a5fbe6c11595a3d5641fc766b00f38763f72303fffc21e",
    ),
    "wan2.2_ti2v_5B_fp16.safetensors": (
        9_999_658_848,
        "456f901338bd9eadbded3828b819109a9b68e8a525ca5cf8d0049a69fcfeca1e",
    ),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": (
        6_735_906_897,
        "c3355d30191f1f066b26d93fba017ae9809dce6c627dda5f6a66eaa651204f68",
    ),
    "wan_2.1_vae.safetensors": (253_815_318, "2fc39d31359a4b0a64f55876d8ff7fa8d780956ae2cb13463b0223e15148976b"),
    "wan2.2_vae.safetensors": (1_409_400_960, "e40321bd36b9709991dae2530eb4ac303dd168276980d3e9bc4b6e2b75fed156"),
    "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors": (
        1_226_977_424,
        "d176c808d6fc461999b68e321efcb7501b20b8c3797523ed0df14f7d1deff11e",
    ),
    "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors": (
        1_226_977_424,
        "024f21de095bc8fad9809ded3e9e49a2e170dcf27075da8145ba7d60d8aab7f9",
    ),
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors": (
        1_226_977_424,
        "698321cb86bd30c4af06c9b84e656a1048c8cb54e06d50694536fb5de37fde41",
    ),
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors": (
        1_226_977_424,
        "ec95216e614b3c132c11bfb387b11feedf62163150ccc9068bca8a189771e75a",
    ),
}


@pytest.fixture
def wan(models_dir: Path) -> Catalog:
    return load_catalog([WAN22], models_dir)


def _files(catalog: Catalog, preset: str) -> set[str]:
    return {Path(m.dest).name for m in catalog.select([preset])}


def test_wan22_t2v_fp8_preset_is_the_two_experts_umt5_and_the_21_vae(wan: Catalog) -> None:
    specs = wan.select(["wan22-t2v-14b-fp8"])
    assert {m.dest for m in specs} == {
        "diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
        "diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
        "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "vae/wan_2.1_vae.safetensors",
    }
    assert sum(m.size or 0 for m in specs) == 35_577_569_479
    assert all(m.required for m in specs)


def test_wan22_ti2v_5b_uses_the_22_vae_not_the_21(wan: Catalog) -> None:
    files = _files(wan, "wan22-ti2v-5b")
    assert "wan2.2_vae.safetensors" in files
    assert "wan_2.1_vae.safetensors" not in files
    assert files == {
        "wan2.2_ti2v_5B_fp16.safetensors",
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "wan2.2_vae.safetensors",
    }


def test_wan22_has_an_i2v_a14b_fp8_preset(wan: Catalog) -> None:
    wanted = {
        "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
        "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "wan_2.1_vae.safetensors",
    }
    assert [name for name in wan.presets if _files(wan, name) == wanted], "no preset is exactly I2V-A14B fp8"


def test_wan22_has_optional_4step_lora_presets_for_t2v_and_i2v(wan: Catalog) -> None:
    files_of = {name: _files(wan, name) for name in wan.presets}
    lora_presets = {name: files for name, files in files_of.items() if all("lightx2v" in f for f in files)}
    found = set().union(*lora_presets.values()) if lora_presets else set()
    assert found == {f for f in WAN_FILES if "lightx2v" in f}, lora_presets
    assert any(all("_t2v_" in f for f in files) for files in lora_presets.values())
    assert any(all("_i2v_" in f for f in files) for files in lora_presets.values())
    for name in lora_presets:
        assert all(m.required is False for m in wan.select([name])), name


def test_wan22_every_model_has_sha_size_and_a_comfyui_dest(wan: Catalog) -> None:
    assert len(wan.models) == len(WAN_FILES)
    for m in wan.models.values():
        folder, name = m.dest.split("/")
        assert folder in COMFY_FOLDERS, m.id
        assert re.fullmatch(r"[0-9a-f]{64}", m.sha256 or ""), m.id
        assert (m.size, m.sha256) == WAN_FILES[name], m.id
        assert m.required is (folder != "loras"), m.id  # LoRAs are optional, everything else needed
        src = m.parsed_source
        assert isinstance(src, HfSource) and src.repo_id.startswith("Comfy-Org/Wan_2."), m.id
        assert src.path == f"split_files/{m.dest}", m.id  # the hub lays files out by ComfyUI folder too


def test_wan22_umt5_facts(wan: Catalog) -> None:
    (umt5,) = [m for m in wan.models.values() if m.dest.endswith("umt5_xxl_fp8_e4m3fn_scaled.safetensors")]
    assert umt5.sha256 == "c3355d30191f1f066b26d93fba017ae9809dce6c627dda5f6a66eaa651204f68"
    assert umt5.size == 6_735_906_897
    assert umt5.dest == "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"


def test_wan22_every_preset_is_selectable(wan: Catalog) -> None:
    assert {"wan22-t2v-14b-fp8", "wan22-ti2v-5b"} <= set(wan.presets)
    for name, preset in wan.presets.items():
        assert [m.id for m in wan.select([name])] == [i for i in wan.models if i in preset.models]


# --- CLI ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """run(*args) -> click Result, with the workspace, models dir and state in tmp, shipped manifests only."""
    ws = tmp_path / "workspace"
    env = {
        "WORKSPACE": str(ws),
        "MODELS_DIR": str(ws / "ComfyUI" / "models"),
        "DOWNLOADER_STATE": str(ws / ".downloader"),
        "DOWNLOADER_MANIFESTS": str(SHIPPED),
        "COLUMNS": "200",
    }
    for name in ("MODEL_PRESETS", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "CIVITAI_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner(env=env)

    def run(*args: str):
        return runner.invoke(main, list(args), catch_exceptions=False)

    run.workspace = ws  # type: ignore[attr-defined]
    return run


def nothing_happened(ws: Path) -> None:
    """No file anywhere in the models dir and no download queued in the state DB."""
    models = ws / "ComfyUI" / "models"
    assert not models.exists() or [p for p in models.rglob("*") if not p.is_dir()] == []
    db = ws / ".downloader" / "state.db"
    if db.exists():
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
            if "downloads" in tables:
                assert conn.execute("select count(*) from downloads").fetchone()[0] == 0


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


BAD_MANIFESTS = {
    "escaping-dest": (models_yaml(model("wan-high", dest="../../etc/x.safetensors")), "wan-high", "dest", 4),
    "bad-sha": (models_yaml(model("umt5", sha256="deadbeef")), "umt5", "sha256", 5),
    "unknown-key": (models_yaml(model("vae", sizee="10")), "vae", "sizee", 5),
    "token-url": (models_yaml(model("lora", source="'https://civitai.com/x?token=SECRET99'")), "lora", "source", 3),
}


@pytest.mark.parametrize("command", ["plan", "fetch"])
@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_cli_bad_manifest_exits_2_with_one_error_line_and_downloads_nothing(
    cli, tmp_path: Path, command: str, case: str
) -> None:
    text, model_id, field, line = BAD_MANIFESTS[case]
    good = write(tmp_path, "good.yaml", models_yaml(model("fine", dest="vae/fine.safetensors")))
    bad = write(tmp_path, f"{case}.yaml", text)
    result = cli(command, str(good), str(bad))
    assert result.exit_code == 2, result.output
    (err,) = error_lines(result.output)
    assert err.startswith(f"Error: {bad}:{line}, model '{model_id}', field '{field}': "), err
    assert "Traceback" not in result.output and "SECRET99" not in result.output
    nothing_happened(cli.workspace)


def test_cli_bad_manifest_in_workspace_manifests_folder_stops_fetch(cli) -> None:
    write(cli.workspace / "manifests", "mine.yaml", models_yaml(model("wan22-vae", dest="vae/mine.safetensors")))
    result = cli("fetch", "--preset", "wan22-ti2v-5b")
    assert result.exit_code == 2, result.output
    (err,) = error_lines(result.output)
    assert str(cli.workspace / "manifests" / "mine.yaml") in err
    assert "model 'wan22-vae'" in err and "field 'id'" in err and f"in {WAN22}" in err
    nothing_happened(cli.workspace)


@pytest.mark.parametrize("command", ["plan", "fetch"])
def test_cli_unknown_preset_exits_2_listing_known_presets(cli, command: str) -> None:
    result = cli(command, "--preset", "nope")
    assert result.exit_code == 2, result.output
    (err,) = error_lines(result.output)
    assert "unknown preset 'nope'" in err
    for name in ("wan22-t2v-14b-fp8", "wan22-i2v-14b-fp8", "wan22-ti2v-5b"):
        assert name in err
    nothing_happened(cli.workspace)


def test_cli_unknown_only_id_exits_2(cli) -> None:
    result = cli("fetch", "--only", "wan21-vea")
    assert result.exit_code == 2, result.output
    (err,) = error_lines(result.output)
    assert "unknown model id 'wan21-vea'" in err
    nothing_happened(cli.workspace)


def test_cli_missing_manifest_file_exits_2(cli, tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "wan22.yaml"
    result = cli("fetch", str(missing))
    assert result.exit_code == 2, result.output
    (err,) = error_lines(result.output)
    assert str(missing) in err and "not found" in err
    nothing_happened(cli.workspace)


def test_cli_missing_manifest_folder_exits_2(cli, tmp_path: Path) -> None:
    missing = tmp_path / "my-manifests"
    result = cli("fetch", str(missing))
    assert result.exit_code == 2, result.output
    assert str(missing) in result.output


def test_cli_presets_lists_shipped_presets_with_sizes(cli) -> None:
    result = cli("presets")
    assert result.exit_code == 0, result.output
    out = result.output
    for line in (
        "wan22-t2v-14b-fp8 (33.1 GiB)",
        "wan22-i2v-14b-fp8 (33.1 GiB)",
        "wan22-ti2v-5b (16.9 GiB)",
        "wan22-t2v-4step-loras (2.3 GiB)",
        "wan22-i2v-4step-loras (2.3 GiB)",
    ):
        assert line in out, out
    assert "  - wan22-vae" in out and "  - umt5-xxl-fp8" in out
    nothing_happened(cli.workspace)


def test_cli_presets_with_bad_manifest_exits_2(cli, tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "presets:\n  p: [ghost]\n")
    result = cli("presets", str(bad))
    assert result.exit_code == 2, result.output
    (err,) = error_lines(result.output)
    assert err.startswith(f"Error: {bad}") and "field 'presets.p'" in err and "'ghost'" in err, err


# --- properties ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prop_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir with a symlink pointing out (`out`), one pointing inside (`in`) and a real folder."""
    base = tmp_path_factory.mktemp("prop")
    models = base / "models"
    (models / "real" / "deep").mkdir(parents=True)
    (models / "loras").mkdir()
    (base / "outside").mkdir()
    (models / "out").symlink_to(base / "outside", target_is_directory=True)
    (models / "in").symlink_to(models / "real", target_is_directory=True)
    (models / "real" / "up").symlink_to(base, target_is_directory=True)  # a symlink two levels down, pointing out
    (models / "loras" / "leak.bin").symlink_to(base / "outside" / "leak.bin")  # a dangling file symlink, outside
    return models


SEGMENTS = st.one_of(
    st.sampled_from(
        ["", ".", "..", "out", "in", "real", "up", "deep", "loras", "leak.bin", "C:", "x.part", "a.aria2", "~"]
    ),
    st.text(max_size=20),  # at most 80 bytes of UTF-8: file names over 255 bytes are the known bug above
)
DESTS = st.one_of(st.text(max_size=60), st.lists(SEGMENTS, max_size=6).map("/".join))
DRIVE = re.compile(r"^[A-Za-z]:")


@settings(max_examples=300, deadline=None)
@given(dest=DESTS)
@example(dest="out/x.bin")
@example(dest="in/x.bin")
@example(dest="real/up/x.bin")
@example(dest="loras/leak.bin")
def test_property_confine_refuses_or_stays_inside(prop_models_dir: Path, dest: str) -> None:
    root = prop_models_dir.resolve()
    try:
        target = confine(prop_models_dir, dest)
    except ValueError:
        return
    resolved = target.resolve()
    assert root in resolved.parents, f"{dest!r} -> {resolved}, outside {root}"
    assert target.is_relative_to(prop_models_dir)


@settings(max_examples=300, deadline=None)
@given(dest=DESTS)
@example(dest="./loras//x.safetensors")
def test_property_accepted_dest_normalises_idempotently(dest: str) -> None:
    try:
        once = check_dest(dest)
    except ValueError:
        return
    assert check_dest(once) == once
    parts = once.split("/")
    assert all(p not in ("", ".", "..") for p in parts), once
    assert not once.startswith("/") and "\\" not in once


def test_check_dest_is_idempotent_for_a_dot_slash_drive_like_name() -> None:
    try:
        once = check_dest("./C:model.safetensors")
    except ValueError:
        return  # refusing it outright is a consistent fix too
    assert check_dest(once) == once
