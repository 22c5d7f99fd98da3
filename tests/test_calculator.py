"""The video calculator's pure core: the reference's worked examples, the anchors it scales from, the rules for
frames and sizes, input parsing, and hypothesis properties (4n+1 always, suggestions always valid, monotone)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from downloader.calculator import result
from downloader.calculator import shapes as calc
from downloader.calculator.estimates import time_estimate, vram_estimate
from downloader.calculator.inputs import (
    MAX_FPS,
    MAX_FRAMES,
    MAX_SECONDS,
    MAX_SIDE,
    MAX_STEPS,
    InputError,
    Inputs,
    parse_params,
)
from downloader.calculator.model_files import files_for
from downloader.calculator.models import GPUS, MODELS, RTX4090D_SPEED
from downloader.manifest import Catalog, ModelSpec, load_catalog
from tests.conftest import REPO

A14B = MODELS["wan2.2-t2v-a14b"]
TI2V = MODELS["wan2.2-ti2v-5b"]
# The shipped manifest: where the calculator finds the files' names and sizes.
CATALOG = load_catalog([REPO / "manifests" / "wan22.yaml"], Path(tempfile.gettempdir()) / "models")


def calculate(inp: Inputs) -> result.Result:
    return result.calculate(inp, CATALOG)


def calculate_params(params: dict[str, str]) -> result.Result:
    return result.calculate_params(params, CATALOG)


def same(a: result.Result, b: result.Result) -> bool:
    """Equal results, whatever was left to defaults in the inputs."""
    da, db = a.as_dict(), b.as_dict()
    da.pop("inputs"), db.pop("inputs")
    return da == db


# --- the reference's worked examples ----------------------------------------------------------------------


def test_worked_example_832x480x81_on_a_14b():
    assert calc.latent_frames(81) == 21
    assert calc.tokens(81, 832, 480, A14B) == 32_760
    assert calc.latent_shape(81, 832, 480, A14B) == (16, 21, 60, 104)


def test_worked_example_1280x720x81_on_a_14b():
    assert calc.tokens(81, 1280, 720, A14B) == 75_600


def test_worked_example_ti2v_5b_1280x704x121():
    assert calc.tokens(121, 1280, 704, TI2V) == 27_280
    assert calc.latent_shape(121, 1280, 704, TI2V) == (48, 31, 44, 80)


@pytest.mark.parametrize("seconds,fps,frames", [(5, 16, 81), (5, 24, 121), (5, 30, 153), (0.01, 16, 1), (4.8, 16, 77)])
def test_frames_from_seconds(seconds, fps, frames):
    assert calc.frames_from_seconds(seconds, fps) == frames


def test_the_worked_examples_through_calculate():
    r = calculate_params({"model": "wan2.2-t2v-a14b", "width": "832", "height": "480", "frames": "81"})
    assert (r.valid, r.frames, r.latent_frames, r.tokens, r.duration_s) == (True, 81, 21, 32_760, 5.0)
    r = calculate_params({"model": "wan2.2-ti2v-5b", "width": "1280", "height": "704", "seconds": "5"})
    assert (r.valid, r.frames, r.tokens, r.fps) == (True, 121, 27_280, 24.0)
    r = calculate_params({"model": "wan2.2-t2v-a14b", "seconds": "5"})
    assert r.frames == 81 and r.duration_s == 5.0


# --- frames ------------------------------------------------------------------------------------------------


def test_an_invalid_length_is_floored_like_comfyui_and_suggests_its_neighbours():
    assert calc.comfyui_frames(80) == 77 and calc.latent_frames(80) == 20
    assert calc.nearest_valid_frames(80) == [77, 81]
    assert calc.nearest_valid_frames(81) == [77, 81, 85]
    assert calc.nearest_valid_frames(1) == [1, 5]
    r = calculate_params({"frames": "80"})
    assert not r.valid and r.frames == 77 and r.requested_frames == 80 and r.duration_s == 4.75
    [p] = r.problems
    assert p.field == "frames" and "not 4n+1" in p.message and "77" in p.message
    assert [s.params for s in p.suggestions] == [{"frames": 77}, {"frames": 81}]
    assert "frames=81" in p.suggestions[1].query


def test_seconds_that_do_not_land_on_4n_plus_1_say_the_exact_duration():
    r = calculate_params({"seconds": "5.1"})
    assert r.valid and r.frames == 81 and r.duration_s == 5.0
    assert any("5.1 s" in n and "exactly 5 s" in n for n in r.notes)


def test_fps_other_than_the_models_warns_but_is_valid():
    r = calculate_params({"seconds": "5", "fps": "24"})
    assert r.valid and r.frames == 121
    assert any(w.field == "fps" for w in r.warnings)


def test_longer_than_the_default_clip_warns():
    r = calculate_params({"seconds": "10"})
    assert r.valid and r.frames == 161
    assert any(w.field == "frames" and "81" in w.message for w in r.warnings)


# --- sizes -------------------------------------------------------------------------------------------------


def test_sizes_must_be_multiples_of_16_or_32_for_the_5b():
    assert calc.size_is_valid(832, 480, A14B.multiple)
    assert not calc.size_is_valid(850, 480, A14B.multiple)
    assert TI2V.multiple == 32 and A14B.multiple == 16
    assert not calc.size_is_valid(1280, 720, TI2V.multiple)  # 720 = 22.5 × 32
    r = calculate_params({"model": "wan2.2-ti2v-5b", "width": "1280", "height": "720"})
    assert not r.valid
    sizes = [tuple(s) for s in r.size_suggestions]
    assert sizes[0] == (1280, 704) and all(w % 32 == 0 and h % 32 == 0 for w, h in sizes)


def test_suggested_sizes_keep_the_aspect_ratio():
    for w, h in calc.suggest_sizes(850, 478, 16):
        assert abs((w / h) / (850 / 478) - 1) < 0.05
    assert calc.suggest_sizes(850, 478, 16)[0] == (848, 480)
    assert calc.suggest_sizes(850, 478, 16, prefer=A14B.sizes)[0] == (832, 480)  # a trained size comes first
    portrait = calc.suggest_sizes(478, 850, 16)
    assert portrait[0] == (480, 848)


def test_sizes_outside_the_trained_set_warn_with_the_nearest_trained_one():
    r = calculate_params({"width": "1024", "height": "576"})
    assert r.valid and not r.trained_size
    [w] = [w for w in r.warnings if w.field == "size"]
    assert "trained set" in w.message and w.suggestions[0].params == {"width": 832, "height": 480}
    r = calculate_params({"width": "720", "height": "1280"})
    assert r.trained_size


def test_i2v_sizes_are_areas():
    r = calculate_params({"model": "wan2.2-i2v-a14b", "width": "640", "height": "640"})
    assert r.trained_size  # 640×640 has about 480p's area
    assert any("target area" in n for n in r.notes)


def test_wan21_1_3b_at_720p_is_less_stable():
    r = calculate_params({"model": "wan2.1-t2v-1.3b", "width": "1280", "height": "720"})
    assert any("less stable" in w.message for w in r.warnings)


# --- chunks, steps, LoRA -----------------------------------------------------------------------------------


def test_s2v_chunks_cover_the_audio():
    r = calculate_params({"model": "wan2.2-s2v-14b", "audio": "10"})
    assert r.chunks is not None and r.chunks.count == 3  # ceil(10 · 16 / 77)
    assert r.chunks.frames_per_chunk == 77 and r.chunks.seconds_per_chunk == pytest.approx(4.8125)
    assert r.frames == 161 and r.frames_from == "audio"
    r = calculate_params({"model": "wan2.2-s2v-14b", "audio": "4.8"})
    assert r.chunks.count == 1


def test_animate_extends_77_frames_at_a_time():
    r = calculate_params({"model": "wan2.2-animate-14b"})
    assert r.fps == 30 and r.frames == 77 and r.chunks.count == 1
    r = calculate_params({"model": "wan2.2-animate-14b", "frames": "153"})
    assert r.chunks.count == 2 and r.chunks.total_frames == 154


def test_lora_means_4_steps_cfg_1_and_is_only_for_the_a14b():
    r = calculate_params({"lora": "1"})
    assert r.valid and r.steps == 4 and r.time.passes == 1 and r.time.evaluations == 4
    r = calculate_params({"lora": "1", "steps": "20"})
    assert any(w.field == "steps" for w in r.warnings)
    r = calculate_params({"model": "wan2.2-ti2v-5b", "lora": "on"})
    assert not r.valid and r.problems[0].field == "lora" and r.problems[0].suggestions[0].params == {"lora": 0}
    assert not r.lora


# --- estimates: the published anchors come back out ----------------------------------------------------------


def test_the_comfyui_4090d_runs_are_reproduced():
    gpu = dataclasses.replace(GPUS["rtx4090"], id="rtx4090d", speed=RTX4090D_SPEED)
    m = MODELS["wan2.2-i2v-a14b"]
    n = calc.tokens(81, 640, 640, m)
    t = time_estimate(m, gpu, "fp8", False, 20, 2, n, 640 * 640 * 81, 1)
    assert t.value == pytest.approx(513, abs=0.5) and t.first_run_s == pytest.approx(537.5, abs=1)
    t = time_estimate(m, gpu, "fp8", True, 4, 1, n, 640 * 640 * 81, 1)
    assert t.value == pytest.approx(71, abs=0.5)
    v = vram_estimate(m, gpu, "fp8", n, CATALOG)
    assert v.value == pytest.approx(0.84 * 24, abs=0.05)
    assert "RTX 4090D" in t.anchor and "84% of 24 GB" in v.anchor and t.label == v.label == "estimate"


def test_the_rtx_4090_anchors_are_reproduced():
    r = calculate_params({"model": "wan2.2-ti2v-5b", "width": "1280", "height": "704", "frames": "121"})
    assert r.time.value == pytest.approx(534.7) and r.vram.value == pytest.approx(22.9)
    r = calculate_params({"model": "wan2.1-t2v-1.3b", "width": "832", "height": "480", "frames": "81"})
    assert r.time.value == pytest.approx(261.4) and r.vram.value == pytest.approx(8.19)


@pytest.mark.parametrize("width,height,published", [(832, 480, 326.9), (1280, 720, 1041.5)])
def test_h100_estimates_land_near_the_published_h100_figures(width, height, published):
    r = calculate_params({"width": str(width), "height": str(height), "gpu": "h100", "steps": "40"})
    assert r.time.value == pytest.approx(published, rel=0.05)
    assert any(f"{published:g} s" in p for p in r.time.published)


def test_more_tokens_more_gpu_less_time():
    small = calculate_params({"width": "832", "height": "480"})
    big = calculate_params({"width": "1280", "height": "720"})
    assert big.time_s > 2 * small.time_s and big.vram_gb > small.vram_gb
    fast = calculate_params({"width": "832", "height": "480", "gpu": "rtx5090"})
    assert fast.time_s < small.time_s


def test_14b_at_720p_on_24_gb_needs_offloading_not_on_5090():
    r = calculate_params({"width": "1280", "height": "720", "gpu": "rtx4090"})
    assert r.valid and r.vram.offload == "needed" and not r.vram.fits
    [w] = [w for w in r.warnings if w.field == "gpu"]
    assert "offload" in w.message and any(s.params == {"width": 832, "height": 480} for s in w.suggestions)
    assert calculate_params({"width": "1280", "height": "720", "gpu": "rtx5090"}).vram.fits
    assert calculate_params({"width": "832", "height": "480", "gpu": "rtx4090"}).vram.fits
    assert calculate_params({"width": "832", "height": "480", "precision": "fp16"}).vram.offload == "needed"


def test_estimates_say_what_they_assume():
    r = calculate_params({})
    for e in (r.vram, r.time):
        assert e.label == "estimate" and e.anchor and e.method and e.assumptions
    assert any("offloading" in a for a in r.time.assumptions)
    assert any("fp8" in a for a in r.time.assumptions)
    r = calculate_params({"model": "wan2.2-s2v-14b"})
    assert any("same 14B DiT" in a for a in r.time.assumptions)


# --- files ---------------------------------------------------------------------------------------------------


def test_files_map_to_the_shipped_manifest_or_are_named():
    ids = [f.manifest_id for f in files_for("wan2.2-t2v-a14b", "fp8", False, CATALOG)]
    assert ids == ["wan22-t2v-high-fp8", "wan22-t2v-low-fp8", "umt5-xxl-fp8", "wan21-vae"]
    assert sum(f.size for f in files_for("wan2.2-t2v-a14b", "fp8", False, CATALOG)) == 35_577_569_479  # wan-models.md
    with_lora = [f.manifest_id for f in files_for("wan2.2-i2v-a14b", "fp8", True, CATALOG)]
    assert with_lora[-2:] == ["wan22-i2v-lightx2v-4step-high", "wan22-i2v-lightx2v-4step-low"]
    ti2v = files_for("wan2.2-ti2v-5b", "fp16", False, CATALOG)
    assert [f.manifest_id for f in ti2v] == ["wan22-ti2v-5b-fp16", "umt5-xxl-fp8", "wan22-vae"]
    fp16 = files_for("wan2.2-t2v-a14b", "fp16", False, CATALOG)
    assert fp16[0].manifest_id is None and fp16[1].size == 28_577_095_592
    for model in ("wan2.2-s2v-14b", "wan2.2-animate-14b", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.1-i2v-14b-480p"):
        files = files_for(model, "fp8", False, CATALOG)
        assert files[0].manifest_id is None and "not in the shipped manifests" in (files[0].note or "")
        assert files[-1].manifest_id == "wan21-vae"


def test_names_sizes_and_the_weights_come_from_the_loaded_manifests():
    spec = CATALOG.models["wan22-t2v-low-fp8"]
    moved = spec.model_copy(update={"dest": "diffusion_models/wan/low.safetensors", "size": 2 * spec.size})
    catalog = dataclasses.replace(CATALOG, models={**CATALOG.models, spec.id: moved})
    low = files_for("wan2.2-t2v-a14b", "fp8", False, catalog)[1]
    assert (low.folder, low.filename, low.size) == ("diffusion_models/wan", "low.safetensors", 2 * spec.size)
    # The VRAM estimate counts the DiT file's size, as the manifest gives it.
    shipped, resized = calculate_params({}), result.calculate_params({}, catalog)
    assert resized.vram.weights_gb == pytest.approx(2 * shipped.vram.weights_gb, abs=0.01)
    assert f"{resized.vram.weights_gb:.1f} GB weights" in resized.vram.method

    # A loaded manifest with a file of the published name claims it.
    s2v = ModelSpec(id="my-s2v", source="https://example.com/s2v.safetensors",
                    dest="diffusion_models/wan2.2_s2v_14B_fp8_scaled.safetensors", size=123)
    claimed = files_for("wan2.2-s2v-14b", "fp8", False, dataclasses.replace(CATALOG, models={"my-s2v": s2v}))[0]
    assert (claimed.manifest_id, claimed.size) == ("my-s2v", 123)


def test_without_the_shipped_manifest_files_say_so_and_the_estimates_stand():
    files = files_for("wan2.2-t2v-a14b", "fp8", False, Catalog())
    assert all(f.manifest_id is None and "not in the loaded manifests" in (f.note or "") for f in files)
    assert "manifest id wan22-t2v-high-fp8" in (files[0].note or "")
    r = result.calculate_params({}, Catalog())
    assert r.vram.weights_gb == pytest.approx(14e9 / 2**30, abs=0.01)  # 14B parameters at 1 byte (fp8)
    assert r.vram.value == pytest.approx(calculate_params({}).vram.value, rel=0.05)


# --- parsing -------------------------------------------------------------------------------------------------


def test_defaults_and_canonical_query():
    inp = parse_params({})
    assert inp == Inputs()
    r = calculate(inp)
    assert (r.width, r.height, r.frames, r.precision, r.steps) == (832, 480, 81, "fp8", 20)
    assert r.query == "model=wan2.2-t2v-a14b&width=832&height=480&gpu=rtx4090&precision=fp8"
    again = calculate(parse_params(dict(parse_qsl(r.query))))
    assert same(again, r)


def test_empty_values_mean_default_and_by_picks_seconds_or_frames():
    assert parse_params({"fps": "", "steps": " ", "width": ""}) == Inputs()
    assert parse_params({"seconds": "5", "frames": "80", "by": "seconds"}).frames is None
    assert parse_params({"seconds": "5", "frames": "80", "by": "frames"}).seconds is None
    assert parse_params({"precision": "BF16", "model": "WAN2.2-TI2V-5B"}).precision == "fp16"


@pytest.mark.parametrize(
    "params,param,words",
    [
        ({"width": "abc"}, "width", "whole number"),
        ({"width": "-5"}, "width", "negative"),
        ({"width": "0"}, "width", "zero"),
        ({"width": "8193"}, "width", "at most 8192"),
        ({"height": "1e3"}, "height", "whole number"),
        ({"height": "480.5"}, "height", "whole number"),
        ({"seconds": "0"}, "seconds", "above 0"),
        ({"seconds": "-1"}, "seconds", "above 0"),
        ({"seconds": "601"}, "seconds", "at most 600"),
        ({"seconds": "nan"}, "seconds", "number"),
        ({"seconds": "inf"}, "seconds", "number"),
        ({"frames": "10001"}, "frames", "at most 10000"),
        ({"frames": "2.5"}, "frames", "whole number"),
        ({"frames": "0"}, "frames", "zero"),
        ({"fps": "0"}, "fps", "above 0"),
        ({"fps": "121"}, "fps", "at most 120"),
        ({"steps": "0"}, "steps", "zero"),
        ({"steps": "201"}, "steps", "at most 200"),
        ({"audio": "-3"}, "audio", "above 0"),
        ({"model": "wan3"}, "model", "wan2.2-t2v-a14b"),
        ({"gpu": "rtx9090"}, "gpu", "rtx4090"),
        ({"precision": "int4"}, "precision", "fp8"),
        ({"lora": "maybe"}, "lora", "1 or 0"),
        ({"by": "minutes"}, "by", "seconds"),
        ({"seconds": "5", "frames": "81"}, "frames", "not both"),
        ({"second": "5"}, "second", "unknown parameter"),
        ({"width": "８３２"}, "width", "whole number"),
        ({"width": "9" * 400}, "width", "at most 8192"),
    ],
)
def test_malformed_input_names_the_parameter(params, param, words):
    with pytest.raises(InputError) as err:
        parse_params(params)
    assert err.value.param == param
    assert str(err.value).startswith(f"{param}: ") and words in str(err.value)
    assert len(str(err.value)) < 300


# --- properties ----------------------------------------------------------------------------------------------

seconds_st = st.floats(min_value=0.001, max_value=MAX_SECONDS, allow_nan=False)
fps_st = st.floats(min_value=1, max_value=MAX_FPS, allow_nan=False)


@given(seconds_st, fps_st)
def test_every_frame_count_from_seconds_is_4n_plus_1(seconds, fps):
    f = calc.frames_from_seconds(seconds, fps)
    assert f >= 1 and (f - 1) % 4 == 0
    assert abs((f - 1) / fps - seconds) <= 2 / fps + 1e-9  # within half a latent frame (2 frames)


@given(seconds_st, seconds_st, fps_st)
def test_more_seconds_never_gives_fewer_frames(a, b, fps):
    lo, hi = sorted((a, b))
    assert calc.frames_from_seconds(lo, fps) <= calc.frames_from_seconds(hi, fps)


@given(st.integers(min_value=1, max_value=MAX_FRAMES))
def test_comfyui_frames_are_4n_plus_1_and_never_more_than_asked(f):
    made = calc.comfyui_frames(f)
    assert (made - 1) % 4 == 0 and made <= f and f - made < 4
    near = calc.nearest_valid_frames(f)
    assert all((n - 1) % 4 == 0 and n >= 1 for n in near) and near == sorted(near)


@given(st.integers(1, MAX_SIDE), st.integers(1, MAX_SIDE), st.sampled_from([16, 32]))
def test_every_suggested_size_is_valid(w, h, k):
    sizes = calc.suggest_sizes(w, h, k)
    assert sizes, "always at least one suggestion"
    for sw, sh in sizes:
        assert calc.size_is_valid(sw, sh, k) and sw <= MAX_SIDE and sh <= MAX_SIDE
    assert calc.size_is_valid(calc.nearest_multiple(w, k), calc.nearest_multiple(h, k), k)


inputs_st = st.builds(
    Inputs,
    model=st.sampled_from(sorted(MODELS)),
    width=st.integers(1, MAX_SIDE) | st.sampled_from([832, 480, 1280, 720, 704, 850]),
    height=st.integers(1, MAX_SIDE) | st.sampled_from([832, 480, 1280, 720, 704, 478]),
    seconds=st.none() | seconds_st,
    frames=st.none(),
    fps=st.none() | fps_st,
    gpu=st.sampled_from(sorted(GPUS)),
    precision=st.none() | st.sampled_from(["fp8", "fp16"]),
    steps=st.none() | st.integers(1, MAX_STEPS),
    lora=st.booleans(),
    audio=st.none() | seconds_st,
)


@settings(max_examples=150, deadline=None)
@given(inputs_st, st.none() | st.integers(1, MAX_FRAMES))
def test_any_well_formed_input_gives_a_sound_result(inp, frames):
    if frames is not None:
        inp = dataclasses.replace(inp, frames=frames, seconds=None)
    r = calculate(inp)
    assert (r.frames - 1) % 4 == 0 and r.latent_frames == (r.frames - 1) // 4 + 1
    assert r.valid == (not r.problems)
    assert r.tokens > 0 and r.vram.value > 0 and r.time.value >= 0 and r.time.first_run_s >= r.time.value
    assert all(calc.size_is_valid(w, h, r.model["multiple"]) for w, h in r.size_suggestions)
    # The canonical query is a shareable URL: parsed back, it gives the same result.
    assert same(calculate(parse_params(dict(parse_qsl(r.query)))), r)
    # Every suggestion is a well-formed query, and a frames / size / LoRA suggestion fixes its problem.
    for msg in r.problems + r.warnings:
        for s in msg.suggestions:
            fixed = calculate(parse_params(dict(parse_qsl(s.query))))
            if msg in r.problems and msg.field in ("frames", "size", "lora"):
                assert msg.field not in [p.field for p in fixed.problems], (msg, s)


@given(inputs_st)
def test_bigger_inputs_never_cost_less(inp):
    assume(inp.seconds is not None and inp.seconds < 300)
    r1 = calculate(inp)
    r2 = calculate(dataclasses.replace(inp, seconds=inp.seconds * 2))
    assert r2.frames >= r1.frames and r2.tokens >= r1.tokens and r2.time.value >= r1.time.value
