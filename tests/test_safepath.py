"""web.safepath: the one function every file-manager route confines its paths with (pure, no Flask).

A real directory tree in tmp with symbolic links of every kind: inside -> inside (followed), inside -> outside
(refused, also dangling, also through a chain, also when the chain comes back in), loops. Plus a hypothesis
property: whatever path is generated, the answer is a PathError or a path inside the root that the kernel's own
resolution agrees with.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from web.safepath import (
    MAX_LINKS,
    PathError,
    Resolved,
    check_name,
    relative,
    resolve,
    split,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """base/ws is the root; base/outside holds a secret; links of every kind inside ws."""
    base = tmp_path_factory.mktemp("safepath")
    ws, out = base / "ws", base / "outside"
    (ws / "sub" / "deep").mkdir(parents=True)
    out.mkdir()
    (out / "secret.txt").write_text("TOP SECRET")
    (ws / "file.txt").write_text("inside")
    (ws / "sub" / "deep" / "f.bin").write_bytes(b"x")
    links = {
        "in": "sub",  # inside -> inside
        "chain": "in",  # chain of two, inside
        "abs_in": str(ws / "sub"),  # absolute, inside
        "sub/to_root": "..",  # relative up to the root itself: inside
        "sub/deep/sibling": "../../file.txt",  # up two, inside
        "out_file": "../outside/secret.txt",
        "out_dir": "../outside",
        "abs_out": str(out),
        "etc": "/etc",
        "sub/up": "../../outside",
        "sub/rootparent": "../..",
        "dangling_out": "../outside/nothing-here",
        "dangling_in": "sub/nothing-here",
        "chain_out": "out_dir",  # inside -> inside link -> outside
        "loop1": "loop2",
        "loop2": "loop1",
        "self": "self",
        "slashy": "sub//deep/",  # odd but inside
    }
    for name, target in links.items():
        os.symlink(target, ws / name)
    # Outside, a link that points back in: reaching it means going outside first.
    os.symlink(ws / "sub", out / "back_in")
    return ws


@pytest.fixture(scope="module")
def root_link(tree: Path) -> Path:
    """The root given through a symlink (e.g. /workspace -> /mnt/volume)."""
    link = tree.parent / "ws-link"
    os.symlink(tree, link)
    return link


# --- accepted ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rel,expect_rel,expect_real",
    [
        ("", "", "."),
        ("file.txt", "file.txt", "file.txt"),
        ("sub", "sub", "sub"),
        ("sub/", "sub", "sub"),
        ("sub/deep/f.bin", "sub/deep/f.bin", "sub/deep/f.bin"),
        ("in", "in", "sub"),
        ("in/deep/f.bin", "in/deep/f.bin", "sub/deep/f.bin"),
        ("chain/deep", "chain/deep", "sub/deep"),
        ("abs_in/deep", "abs_in/deep", "sub/deep"),
        ("sub/to_root/file.txt", "sub/to_root/file.txt", "file.txt"),
        ("sub/to_root", "sub/to_root", "."),
        ("sub/deep/sibling", "sub/deep/sibling", "file.txt"),
        ("dangling_in", "dangling_in", "sub/nothing-here"),
        ("slashy/f.bin", "slashy/f.bin", "sub/deep/f.bin"),
        ("new-file.bin", "new-file.bin", "new-file.bin"),
        ("sub/new/deeper/x", "sub/new/deeper/x", "sub/new/deeper/x"),
        # After the HTTP layer's one decode, what still looks encoded is just a name: never decoded again.
        ("%2e%2e", "%2e%2e", "%2e%2e"),
        ("%2e%2e%2fsecret.txt", "%2e%2e%2fsecret.txt", "%2e%2e%2fsecret.txt"),
        ("%252e%252e", "%252e%252e", "%252e%252e"),
        ("...", "...", "..."),
        ("..foo", "..foo", "..foo"),
        ("~", "~", "~"),
        ("\uff0e\uff0e", "\uff0e\uff0e", "\uff0e\uff0e"),  # fullwidth dots are not dots to the filesystem
        ("C:", "C:", "C:"),
        ("caf\u00e9 \u2603.png", "caf\u00e9 \u2603.png", "caf\u00e9 \u2603.png"),
    ],
)
def test_paths_inside_resolve(tree: Path, rel: str, expect_rel: str, expect_real: str) -> None:
    res = resolve(tree, rel)
    assert isinstance(res, Resolved)
    assert res.rel == expect_rel
    assert res.real == (tree / expect_real).resolve() if expect_real != "." else res.real == tree.resolve()
    assert res.real == Path(os.path.realpath(tree / rel)), "must agree with the kernel's resolution"


def test_the_last_symlink_is_kept_in_path_and_followed_in_real(tree: Path) -> None:
    res = resolve(tree, "in")
    assert res.path == tree.resolve() / "in" and res.path.is_symlink()
    assert res.real == tree.resolve() / "sub"
    deep = resolve(tree, "chain/deep/sibling")
    assert deep.path == tree.resolve() / "sub" / "deep" / "sibling"  # the folders resolved, the name kept
    assert deep.real == tree.resolve() / "file.txt"
    assert resolve(tree, "").is_root and not resolve(tree, "sub").is_root
    assert resolve(tree, "sub/deep/f.bin").name == "f.bin"


def test_root_given_through_a_symlink(tree: Path, root_link: Path) -> None:
    assert resolve(root_link, "in/deep").real == tree.resolve() / "sub" / "deep"
    assert resolve(root_link, "").real == tree.resolve()
    # An absolute link naming the root by its other name is inside too.
    os.symlink(root_link / "sub", tree / "via_given_root")
    try:
        assert resolve(root_link, "via_given_root/deep").real == tree.resolve() / "sub" / "deep"
    finally:
        (tree / "via_given_root").unlink()
    with pytest.raises(PathError) as e:
        resolve(root_link, "out_dir/secret.txt")
    assert e.value.status == 403


# --- refused: malformed (400) ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rel,words",
    [
        ("..", "'..' is not allowed"),
        ("../outside/secret.txt", "'..' is not allowed"),
        ("sub/../../outside", "'..' is not allowed"),
        ("sub/..", "'..' is not allowed"),
        (".", "'.' is not allowed"),
        ("./file.txt", "'.' is not allowed"),
        ("sub/./deep", "'.' is not allowed"),
        ("/etc/passwd", "absolute paths are not allowed"),
        ("//etc/passwd", "absolute paths are not allowed"),
        ("/", "absolute paths are not allowed"),
        ("..\\outside\\secret.txt", "backslashes"),
        ("sub\\..\\..\\outside", "backslashes"),
        ("\\\\server\\share", "backslashes"),
        ("C:\\Windows", "backslashes"),
        ("file.txt\x00.png", "NUL byte"),
        ("\x00", "NUL byte"),
        ("sub//deep", "empty path segment"),
        ("sub/deep//", "empty path segment"),
        ("file:///etc/passwd", "empty path segment"),
        ("a\nb", "control characters"),
        ("a\tb", "control characters"),
        ("x" * 256, "name too long"),
        ("\u00e9" * 128, "name too long"),  # 256 bytes in UTF-8
        ("a/" * 2100, "path too long"),
        ("\ud800", "not valid text"),
    ],
)
def test_malformed_paths_are_400(tree: Path, rel: str, words: str) -> None:
    with pytest.raises(PathError) as e:
        resolve(tree, rel)
    assert e.value.status == 400
    assert words in str(e.value)


@pytest.mark.parametrize("rel", [None, 3, ["file.txt"], b"file.txt", {"p": 1}])
def test_non_strings_are_400(tree: Path, rel: object) -> None:
    with pytest.raises(PathError) as e:
        resolve(tree, rel)
    assert e.value.status == 400 and "must be a string" in str(e.value)


# --- refused: leaves the root (403) ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rel",
    [
        "out_file",
        "out_dir",
        "out_dir/secret.txt",
        "out_dir/does-not-exist",
        "abs_out/secret.txt",
        "etc/passwd",
        "etc",
        "sub/up/secret.txt",
        "in/up/secret.txt",
        "sub/rootparent",
        "sub/rootparent/outside/secret.txt",
        "dangling_out",
        "chain_out/secret.txt",
        "out_dir/back_in",  # comes back inside, but only by going outside first
        "out_dir/back_in/deep/f.bin",
    ],
)
def test_symlinks_leading_outside_are_403(tree: Path, rel: str) -> None:
    with pytest.raises(PathError) as e:
        resolve(tree, rel)
    assert e.value.status == 403
    assert "outside the workspace" in str(e.value)
    assert repr(rel) in str(e.value), "the message names the path it refuses"


@pytest.mark.parametrize("rel", ["loop1", "loop2/x", "self", "sub/to_root/self"])
def test_symlink_loops_are_400(tree: Path, rel: str) -> None:
    with pytest.raises(PathError) as e:
        resolve(tree, rel)
    assert e.value.status == 400 and "too many levels of symbolic links" in str(e.value)


def test_a_long_chain_inside_is_followed_up_to_the_limit(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    previous = "target"
    for i in range(MAX_LINKS):
        os.symlink(previous, tmp_path / f"l{i}")
        previous = f"l{i}"
    assert resolve(tmp_path, previous).real == (tmp_path / "target").resolve()
    os.symlink(previous, tmp_path / "one-too-many")
    with pytest.raises(PathError):
        resolve(tmp_path, "one-too-many")


def test_nothing_outside_is_looked_at(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deciding about a link never stats or reads a link beyond the root (only the link itself)."""
    outside = str(tree.parent / "outside")
    seen: list[str] = []
    real_lstat, real_readlink = os.lstat, os.readlink

    def lstat(p, *a, **k):  # type: ignore[no-untyped-def]
        seen.append(os.fspath(p))
        return real_lstat(p, *a, **k)

    def readlink(p, *a, **k):  # type: ignore[no-untyped-def]
        seen.append(os.fspath(p))
        return real_readlink(p, *a, **k)

    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "readlink", readlink)
    for rel in ("out_dir/back_in/deep", "sub/up/secret.txt", "chain_out/secret.txt", "abs_out/x"):
        with pytest.raises(PathError):
            resolve(tree, rel)
    assert seen and not [p for p in seen if p.startswith(outside)]


# --- names and helpers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "a\x00", "a\x7f", "x" * 256])
def test_check_name_refuses(name: str) -> None:
    with pytest.raises(PathError):
        check_name(name)


@pytest.mark.parametrize("name", ["a", "...", ".hidden", "model.safetensors", "x" * 255, "%2e%2e", "\u00e9t\u00e9"])
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


def test_split_and_relative(tree: Path) -> None:
    assert split("") == [] and split("a/b/") == ["a", "b"]
    assert relative(tree, tree.resolve() / "sub" / "x") == "sub/x"
    assert relative(tree, tree.resolve()) == ""
    assert relative(tree, tree.parent / "outside") is None
    assert relative(tree, str(tree.resolve()) + "-sibling") is None, "a prefix is not a parent"


def test_a_sibling_with_the_root_as_prefix_is_outside(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws-evil").mkdir()
    os.symlink("../ws-evil", tmp_path / "ws" / "evil")
    os.symlink(str(tmp_path / "ws-evil"), tmp_path / "ws" / "evil_abs")
    for rel in ("evil", "evil_abs"):
        with pytest.raises(PathError) as e:
            resolve(tmp_path / "ws", rel)
        assert e.value.status == 403


# --- property: no generated path escapes ----------------------------------------------------------------------
SEGMENTS = st.sampled_from(
    [
        "..", ".", "", "sub", "deep", "in", "chain", "abs_in", "to_root", "sibling", "out_file", "out_dir",
        "abs_out", "etc", "up", "rootparent", "dangling_out", "dangling_in", "chain_out", "loop1", "self",
        "back_in", "secret.txt", "file.txt", "f.bin", "outside", "ws", "%2e%2e", "%2f", "..%2f", "\\", "..\\",
        "\x00", "~", "\uff0e\uff0e",
    ]
) | st.text(min_size=0, max_size=12)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=st.lists(SEGMENTS, min_size=0, max_size=8), absolute=st.booleans())
@example(segments=["in", "to_root", "..", "outside"], absolute=False)
@example(segments=["sub", "up", "secret.txt"], absolute=False)
@example(segments=["out_dir", "back_in"], absolute=False)
def test_property_no_generated_path_escapes_the_root(tree: Path, segments: list[str], absolute: bool) -> None:
    rel = ("/" if absolute else "") + "/".join(segments)
    root_real = os.path.realpath(tree)
    try:
        res = resolve(tree, rel)
    except PathError as e:
        assert e.status in (400, 403)
        return
    for p in (res.real, res.path):
        assert os.path.commonpath([root_real, str(p)]) == root_real, f"{rel!r} escaped to {p}"
    # What the kernel would open is exactly what was checked (nothing on the way was outside).
    assert str(res.real) == os.path.realpath(os.path.join(root_real, res.rel))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rel=st.text(max_size=300))
def test_property_any_text_is_a_path_error_or_inside(tree: Path, rel: str) -> None:
    root_real = os.path.realpath(tree)
    try:
        res = resolve(tree, rel)
    except PathError:
        return
    assert os.path.commonpath([root_real, str(res.real)]) == root_real
