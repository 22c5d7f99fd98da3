"""The video calculator's page and JSON API through Flask's test client, on a real DownloadService with the shipped
WAN 2.2 manifest (files on disk are real files in a tmp models folder)."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from downloader.calculator.inputs import PARAMS
from downloader.calculator.models import GPUS, MODELS
from downloader.manifest import load_catalog
from downloader.service import DownloadService
from web import create_app
from web.auth import AuthConfig

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "calculator-pw"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"me:{PASSWORD}".encode()).decode()}
API = "/api/video-calculator"


@pytest.fixture
def svc(settings) -> Iterator[DownloadService]:
    service = DownloadService(settings, catalog=load_catalog([REPO / "manifests" / "wan22.yaml"], settings.models_dir))
    yield service
    service.stop()


@pytest.fixture
def client(svc):
    app = create_app(svc.settings, svc, auth_config=AuthConfig(PASSWORD, "DOWNLOADER_PASSWORD"))
    return app.test_client()


def get(client, **params):
    return client.get(API, query_string=params, headers=AUTH)


def login(client) -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.get_data(as_text=True)).group(1)
    res = client.post("/login", data={"password": PASSWORD, "csrf_token": token, "next": "/video-calculator"})
    assert res.status_code == 302


def place(settings, dest: str, size: int) -> Path:
    """A file of the right size where ComfyUI looks (sparse: no real bytes written)."""
    path = settings.models_dir / dest
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


# --- auth ------------------------------------------------------------------------------------------------


def test_login_is_required(client):
    res = client.get(API)
    assert res.status_code == 401 and "authentication required" in res.get_json()["error"]
    res = client.get("/video-calculator?frames=81")
    assert res.status_code == 302 and "/login" in res.headers["Location"]


# --- the worked examples through the API -------------------------------------------------------------------


def test_worked_examples(client):
    d = get(client, model="wan2.2-t2v-a14b", width=832, height=480, frames=81).get_json()
    assert (d["valid"], d["frames"], d["latent_frames"], d["tokens"], d["duration_s"]) == (True, 81, 21, 32760, 5.0)
    assert d["problems"] == [] and d["latent_shape"] == [16, 21, 60, 104]
    d = get(client, model="wan2.2-t2v-a14b", width=832, height=480, seconds=5).get_json()
    assert d["frames"] == 81
    d = get(client, model="wan2.2-ti2v-5b", width=1280, height=704, seconds=5).get_json()
    assert (d["frames"], d["tokens"], d["latent_frames"]) == (121, 27280, 31)
    d = get(client, model="wan2.2-t2v-a14b", width=1280, height=720, frames=81).get_json()
    assert d["tokens"] == 75600


def test_answer_shape(client):
    d = get(client, model="wan2.2-i2v-a14b", width=832, height=480, seconds=5, gpu="rtx5090", precision="fp8",
            steps=20, lora=0, fps=16).get_json()
    for key in ("frames", "duration_s", "latent_frames", "tokens", "valid", "problems", "warnings", "vram_gb",
                "time_s", "vram", "time", "files", "share_url", "query", "nearest_frames", "latent_shape"):
        assert key in d, key
    for est in (d["vram"], d["time"]):
        assert est["label"] == "estimate" and est["anchor"] and est["method"] and est["assumptions"]
    assert d["vram_gb"] == round(d["vram"]["value"], 1) and d["time_s"] == round(d["time"]["value"])
    assert d["gpu"]["id"] == "rtx5090" and d["gpu"]["vram_gb"] == 32
    assert "assumed" in d["gpu"]["basis"]


def test_invalid_settings_answer_200_with_reasons_and_suggestions(client):
    res = get(client, width=850, height=480, frames=80)
    assert res.status_code == 200
    d = res.get_json()
    assert d["valid"] is False and d["frames"] == 77 and d["nearest_frames"] == [77, 81]
    by_field = {p["field"]: p for p in d["problems"]}
    assert set(by_field) == {"frames", "size"}
    assert "ComfyUI" in by_field["frames"]["message"] and "77" in by_field["frames"]["message"]
    assert [s["params"] for s in by_field["frames"]["suggestions"]] == [{"frames": 77}, {"frames": 81}]
    assert by_field["size"]["suggestions"][0]["params"] == {"width": 832, "height": 480}
    assert all(s["params"]["width"] % 16 == 0 for s in by_field["size"]["suggestions"])
    # Following a suggestion (a query string) fixes its problem.
    fixed = client.get(API + "?" + by_field["frames"]["suggestions"][1]["query"], headers=AUTH).get_json()
    assert "frames" not in [p["field"] for p in fixed["problems"]] and fixed["frames"] == 81


def test_lora_on_a_model_without_one_is_invalid(client):
    d = get(client, model="wan2.1-t2v-14b", lora=1).get_json()
    assert d["valid"] is False and d["problems"][0]["field"] == "lora"


def test_offloading_warning_for_14b_720p_on_24_gb(client):
    d = get(client, width=1280, height=720, gpu="rtx4090").get_json()
    assert d["valid"] is True and d["vram"]["offload"] == "needed"
    assert any(w["field"] == "gpu" and "offload" in w["message"] for w in d["warnings"])


# --- bad input: 400 with the parameter named, never a 500 --------------------------------------------------------


@pytest.mark.parametrize(
    "params,param",
    [
        ({"width": "abc"}, "width"),
        ({"width": "-832"}, "width"),
        ({"width": "0"}, "width"),
        ({"width": "100000"}, "width"),
        ({"height": "4.5"}, "height"),
        ({"height": ""}, None),  # empty: the default
        ({"seconds": "0"}, "seconds"),
        ({"seconds": "-5"}, "seconds"),
        ({"seconds": "601"}, "seconds"),
        ({"seconds": "five"}, "seconds"),
        ({"seconds": "NaN"}, "seconds"),
        ({"seconds": "Infinity"}, "seconds"),
        ({"seconds": "1e400"}, "seconds"),
        ({"frames": "10001"}, "frames"),
        ({"frames": "-1"}, "frames"),
        ({"frames": "0x51"}, "frames"),
        ({"fps": "0"}, "fps"),
        ({"fps": "1000"}, "fps"),
        ({"steps": "-4"}, "steps"),
        ({"steps": "99999999999999999999999"}, "steps"),
        ({"audio": "0"}, "audio"),
        ({"model": "sdxl"}, "model"),
        ({"gpu": "tpu"}, "gpu"),
        ({"precision": "fp4"}, "precision"),
        ({"lora": "2"}, "lora"),
        ({"by": "hours"}, "by"),
        ({"seconds": "5", "frames": "81"}, "frames"),
        ({"colour": "red"}, "colour"),
        ({"width": "\x00"}, "width"),
        ({"width": "<script>"}, "width"),
        ({"x" * 5000: "1"}, "x" * 40 + "…"),
    ],
)
def test_malformed_input_is_400_naming_the_parameter(client, params, param):
    res = client.get(API, query_string=params, headers=AUTH)
    if param is None:
        assert res.status_code == 200
        return
    assert res.status_code == 400
    body = res.get_json()
    assert body["param"] == param and body["error"].startswith(f"{param}: ")


def test_unknown_ids_list_the_valid_ones(client):
    body = get(client, model="wan2.3").get_json()
    assert all(m in body["error"] for m in MODELS)
    body = get(client, gpu="rtx6090").get_json()
    assert all(g in body["error"] for g in GPUS)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(PARAMS), st.text(max_size=12) | st.integers(-10**6, 10**6).map(str), max_size=6))
def test_no_input_gives_a_500(client, params):
    res = client.get(API, query_string=params, headers=AUTH)
    assert res.status_code in (200, 400), (params, res.status_code)
    body = res.get_json()
    if res.status_code == 400:
        assert body["param"] in PARAMS and body["error"]
    else:
        assert (body["frames"] - 1) % 4 == 0
    page = client.get("/video-calculator", query_string=params, headers=AUTH)
    assert page.status_code in (200, 400)
    assert client.get("/video-calculator/results", query_string=params, headers=AUTH).status_code == 200


# --- files this choice needs -------------------------------------------------------------------------------------


def test_files_come_from_the_manifest_with_sizes_and_what_is_on_disk(client, svc):
    d = get(client, model="wan2.2-t2v-a14b", precision="fp8").get_json()["files"]
    ids = [f["id"] for f in d["files"]]
    assert ids == ["wan22-t2v-high-fp8", "wan22-t2v-low-fp8", "umt5-xxl-fp8", "wan21-vae"]
    assert d["total_bytes"] == 35_577_569_479 == d["missing_bytes"] and not d["all_on_disk"]
    assert [p["name"] for p in d["presets"]] == ["wan22-t2v-14b-fp8"]
    assert d["presets"][0]["url"] == "/api/presets/wan22-t2v-14b-fp8/start" and d["downloads_url"] == "/downloads"

    place(svc.settings, "vae/wan_2.1_vae.safetensors", 253_815_318)
    place(svc.settings, "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", 5)  # wrong size: not it
    d = get(client, model="wan2.2-t2v-a14b").get_json()["files"]
    status = {f["id"]: f["status"] for f in d["files"]}
    assert status == {"wan22-t2v-high-fp8": "missing", "wan22-t2v-low-fp8": "missing", "umt5-xxl-fp8": "missing",
                      "wan21-vae": "on disk"}
    assert d["missing_bytes"] == 35_577_569_479 - 253_815_318 and d["missing_count"] == 3

    for spec in svc.catalog.select(["wan22-t2v-14b-fp8"]):
        place(svc.settings, spec.dest, spec.size)
    d = get(client, model="wan2.2-t2v-a14b").get_json()["files"]
    assert d["all_on_disk"] and d["missing_bytes"] == 0 and d["presets"] == []


def test_lora_adds_its_preset_and_models_outside_the_manifest_are_named(client, svc):
    d = get(client, model="wan2.2-i2v-a14b", lora=1).get_json()["files"]
    assert {p["name"] for p in d["presets"]} == {"wan22-i2v-14b-fp8", "wan22-i2v-4step-loras"}
    d = get(client, model="wan2.2-s2v-14b").get_json()["files"]
    first = d["files"][0]
    assert first["in_manifest"] is False and first["status"] == "not in the manifests"
    assert first["filename"] == "wan2.2_s2v_14B_fp8_scaled.safetensors" and first["size"] is None
    assert d["not_in_manifests"] == 2 and d["unknown_sizes"] == 2
    assert [f["id"] for f in d["files"][2:]] == ["umt5-xxl-fp8", "wan21-vae"]
    # A named file already in place counts as on disk.
    place(svc.settings, "diffusion_models/wan2.2_s2v_14B_fp8_scaled.safetensors", 10)
    d = get(client, model="wan2.2-s2v-14b").get_json()["files"]
    assert d["files"][0]["status"] == "on disk"


# --- the page (works without JavaScript) -------------------------------------------------------------------------


def test_page_renders_results_for_the_query_and_links_suggestions(client):
    login(client)
    res = client.get("/video-calculator?model=wan2.2-t2v-a14b&width=850&height=480&frames=80&by=frames&seconds=5")
    assert res.status_code == 200
    text = res.get_data(as_text=True)
    assert 'data-testid="frames">77<' in text and 'data-testid="valid">2 problems<' in text
    assert "80 frames is not 4n+1" in text
    links = [html.unescape(h) for h in re.findall(r'class="suggest" href="\?([^"]+)"', text)]
    assert any(dict(parse_qsl(q)).get("frames") == "81" for q in links)
    assert any(dict(parse_qsl(q)).get("width") == "832" for q in links)
    assert 'name="by" value="frames" id="by-frames" checked' in text
    assert 'value="850"' in text  # the form keeps what was typed
    assert 'aria-current="page"' in text and "Video calculator" in text  # in the nav, current
    assert "estimate" in text and "Anchor" in text
    assert 'action="/api/presets/wan22-t2v-14b-fp8/start"' in text and 'name="csrf_token"' in text


def test_page_default_and_share_url_round_trip(client):
    login(client)
    text = client.get("/video-calculator").get_data(as_text=True)
    assert 'data-testid="tokens">32,760<' in text
    d = client.get(API, query_string={"seconds": "10", "gpu": "h100"}).get_json()
    share = urlsplit(d["share_url"])
    assert share.path == "/video-calculator" and share.scheme == "http"
    again = client.get(API + "?" + share.query).get_json()
    assert again["frames"] == d["frames"] == 161 and again["time_s"] == d["time_s"]
    page = client.get(share.path + "?" + share.query).get_data(as_text=True)
    assert 'data-testid="frames">161<' in page


def test_page_with_malformed_input_is_400_with_the_message_and_the_form(client):
    login(client)
    res = client.get("/video-calculator?width=abc&frames=81&model=wan2.2-ti2v-5b")
    assert res.status_code == 400
    text = res.get_data(as_text=True)
    assert "width: must be a whole number" in text and 'id="calc-form"' in text
    assert 'value="abc"' in text  # shown as typed, to correct
    assert '<option value="wan2.2-ti2v-5b" selected>' in text  # the rest of the query still applies


def test_results_fragment_for_live_updates(client):
    """What htmx swaps in as the inputs change: the results, the form's size chips, and the address bar's query."""
    login(client)
    res = client.get("/video-calculator/results?model=wan2.2-ti2v-5b&width=1280&height=704&by=seconds&seconds=5"
                     "&frames=81&fps=&steps=&gpu=rtx4090&precision=fp16")
    assert res.status_code == 200
    text = res.get_data(as_text=True)
    assert 'data-testid="frames">121<' in text and 'data-testid="tokens">27,280<' in text
    assert '<html' not in text and 'id="calc-form"' not in text  # a fragment, not the page
    assert re.search(r'id="size-presets"[^>]*hx-swap-oob="true"', text) and "704×1280" in text
    assert 'data-frames="121"' in text  # the frames box follows the seconds
    assert res.headers["HX-Replace-Url"] == ("/video-calculator?model=wan2.2-ti2v-5b&width=1280&height=704&seconds=5"
                                             "&gpu=rtx4090&precision=fp16")

    # Malformed: only the message is replaced (the last results stay), the address bar shows what was typed.
    res = client.get("/video-calculator/results?model=wan2.2-t2v-a14b&width=abc&height=480&by=frames&seconds=5"
                     "&frames=80&fps=&gpu=rtx4090")
    assert res.status_code == 200 and res.headers["HX-Retarget"] == "#calc-error"
    text = res.get_data(as_text=True)
    assert "width: must be a whole number" in text and 'data-testid="frames"' not in text
    assert res.headers["HX-Replace-Url"] == "/video-calculator?model=wan2.2-t2v-a14b&width=abc&height=480&frames=80&gpu=rtx4090"
