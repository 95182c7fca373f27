"""The app: the gallery store, model sources, the Streamlit script (AppTest) and one run in headless Chromium."""
import io
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from optim.app.gallery import DATA_DIR_ENV, Gallery, resolve_data_dir, settings_key
from optim.app.model_source import is_torchscript, load_model, load_weights_file, weights_hash
from optim.app.rendering import RenderSettings, render_channels

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "optim" / "app" / "streamlit_app.py"

TINY = textwrap.dedent(
    """
    import torch
    import torch.nn as nn

    def tiny_net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
    """
)


@pytest.fixture
def tiny_factory(tmp_path, monkeypatch):
    (tmp_path / "app_tiny_models.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("app_tiny_models", None)
    return "app_tiny_models:tiny_net"


# ----------------------------------------------------------------------------------------------- gallery


def test_gallery_round_trip_and_persistence(tmp_path) -> None:
    image = torch.rand(3, 10, 12)
    gallery = Gallery(tmp_path / "g")
    entry = gallery.add("tiny", "abc", "conv1", 2, {"steps": 8, "size": 12}, image)
    assert entry.path.parent == tmp_path / "g" / "images" and entry.caption == "conv1:2"
    saved = np.asarray(Image.open(entry.path))
    np.testing.assert_array_equal(saved, (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    assert (entry.width, entry.height) == (12, 10)
    # a new Gallery over the same directory (a new app session) finds it; key order of settings is irrelevant
    again = Gallery(tmp_path / "g").get("tiny", "abc", "conv1", 2, {"size": 12, "steps": 8})
    assert again is not None and again.path == entry.path and again.settings == {"size": 12, "steps": 8}
    assert len(Gallery(tmp_path / "g")) == 1
    for other in (("tiny", "abd", "conv1", 2, {"steps": 8, "size": 12}),  # other weights
                  ("tiny", "abc", "conv1", 3, {"steps": 8, "size": 12}),  # other channel
                  ("tiny", "abc", "conv2", 2, {"steps": 8, "size": 12}),  # other layer
                  ("tiny", "abc", "conv1", 2, {"steps": 9, "size": 12}),  # other settings
                  ("huge", "abc", "conv1", 2, {"steps": 8, "size": 12})):
        assert gallery.get(*other) is None
    entry.path.unlink()  # a PNG deleted by hand is a miss, not a broken image
    assert gallery.get("tiny", "abc", "conv1", 2, {"steps": 8, "size": 12}) is None


def test_gallery_renders_nothing_twice(tmp_path) -> None:
    gallery = Gallery(tmp_path)
    calls = []

    def render():
        calls.append(1)
        return torch.full((1, 3, 4, 4), 0.5)

    first, hit1 = gallery.get_or_render("m", "h", "layer", 0, {"steps": 2}, render)
    second, hit2 = gallery.get_or_render("m", "h", "layer", 0, {"steps": 2}, render)
    third, hit3 = gallery.get_or_render("m", "h", "layer", 0, {"steps": 3}, render)
    assert (hit1, hit2, hit3) == (False, True, False) and len(calls) == 2
    assert first.path == second.path != third.path
    assert gallery.missing_channels("m", "h", "layer", [0, 1, 2], {"steps": 2}) == [1, 2]
    gallery.add("m", "h", "other", None, {"steps": 2}, np.zeros((4, 4, 3), dtype=np.uint8))
    assert [e.caption for e in gallery.entries(model="m")] == ["layer:0", "layer:0", "other"]
    assert [e.caption for e in gallery.entries(layer="other")] == ["other"]
    assert gallery.models() == ["m"] and gallery.layers("m") == ["layer", "other"]


def test_gallery_errors_and_data_dir(tmp_path, monkeypatch) -> None:
    gallery = Gallery(tmp_path)
    with pytest.raises(ValueError, match="channel must be a non-negative int"):
        gallery.add("m", "h", "l", -1, {}, torch.rand(3, 2, 2))
    with pytest.raises(TypeError, match="layer must be a non-empty str"):
        gallery.get("m", "h", "", 0, {})
    with pytest.raises(ValueError, match="one image at a time"):
        gallery.add("m", "h", "l", 0, {}, torch.rand(2, 3, 2, 2))
    with pytest.raises(TypeError, match="JSON values"):
        settings_key({"bad": object()})
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        Gallery(tmp_path / "file")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from_env"))
    assert resolve_data_dir(None) == tmp_path / "from_env" and resolve_data_dir("") == tmp_path / "from_env"
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert Gallery().data_dir == tmp_path / "xdg" / "optim-gallery"


# ------------------------------------------------------------------------------------------ model sources


def test_weights_hash_and_files(tiny_factory, tmp_path) -> None:
    model = load_model(tiny_factory)
    same = load_model(tiny_factory)
    assert weights_hash(model) == weights_hash(same) and len(weights_hash(model)) == 16
    with torch.no_grad():
        same[0].bias[0] += 1e-6
    assert weights_hash(model) != weights_hash(same)
    # a state dict file needs the architecture; a TorchScript file brings its own
    torch.save(same.state_dict(), tmp_path / "w.pt")
    assert not is_torchscript(tmp_path / "w.pt")
    loaded = load_weights_file(tmp_path / "w.pt", load_model(tiny_factory))
    assert weights_hash(loaded) == weights_hash(same)
    with pytest.raises(ValueError, match="choose the architecture"):
        load_weights_file(tmp_path / "w.pt")
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(model, torch.rand(1, 3, 8, 8)), buffer)
    assert is_torchscript(buffer.getvalue())
    scripted = load_weights_file(buffer.getvalue())
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(scripted(x), model(x))
    with pytest.raises(ValueError, match="neither a TorchScript file nor a state dict"):
        load_weights_file(b"not a checkpoint", model)


def test_render_channels_batches_match_single_renders(tiny_factory) -> None:
    model = load_model(tiny_factory)
    settings = RenderSettings(size=12, steps=2, seed=3)
    # the gallery key also names the image defaults, so renders made under other defaults are not reused
    assert settings.as_dict() == {"size": 12, "steps": 2, "seed": 3, "lr": 0.05, "decay_power": 1.5}
    seen = []
    tiles = render_channels(model, "2", [0, 4, 5], settings, batch_size=2,
                            callback=lambda done, total, chunk, t: seen.append((done, total, chunk, t.shape[0])))
    assert seen == [(2, 3, [0, 4], 2), (3, 3, [5], 1)]
    assert [tuple(t.shape) for t in tiles] == [(3, 12, 12)] * 3
    # each batch is seeded alike: the last channel, alone in its batch, equals a one-channel render
    (alone,) = render_channels(model, "2", [5], settings)
    torch.testing.assert_close(tiles[2], alone)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        RenderSettings(steps=0)


# ---------------------------------------------------------------------------------------------- AppTest


def _app(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "gallery"))
    return AppTest.from_file(str(APP), default_timeout=120)


def _choose_factory(at, spec: str):
    at.radio(key="source").set_value("Python factory")
    at.run()
    at.text_input(key="factory").set_value(spec)
    at.number_input(key="size").set_value(16)
    at.number_input(key="steps").set_value(2)
    return at.run()


def test_app_renders_a_channel_then_serves_it_from_the_gallery(tiny_factory, tmp_path, monkeypatch) -> None:
    pytest.importorskip("streamlit", reason="the app needs the 'app' extra (streamlit)")
    at = _app(tmp_path, monkeypatch).run()
    assert not at.exception
    assert at.title[0].value == "optim: feature visualization"
    assert at.text_input(key="data_dir").value == str(tmp_path / "gallery")
    at = _choose_factory(at, tiny_factory)
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["layer"]) == ["0", "1", "2", "3", "4", "5", "6"]
    assert list(table["channels"][:4]) == [4, 4, 6, 6]
    assert at.selectbox(key="layer").options[:4] == [f"{n}  ({t}, {c} channels)" for n, t, c in
                                                     (("0", "Conv2d", 4), ("1", "ReLU", 4), ("2", "Conv2d", 6),
                                                      ("3", "ReLU", 6))]
    at.selectbox(key="layer").set_value("2").run()  # the channel field's range follows the layer
    at.number_input(key="channel").set_value(5)
    at.button(key="render_channel").click().run()
    assert not at.exception
    assert at.success[0].value == "2:5: rendered"
    assert at.get("image")[0].captions == ["2:5"]
    gallery = Gallery(tmp_path / "gallery")
    model = load_model(tiny_factory)
    (entry,) = gallery.entries()
    assert (entry.model, entry.weights_hash, entry.layer, entry.channel) == (tiny_factory, weights_hash(model), "2", 5)
    assert entry.settings == RenderSettings(size=16, steps=2, seed=0).as_dict()
    # the same image as a direct render with those settings
    (direct,) = render_channels(model, "2", [5], RenderSettings(size=16, steps=2, seed=0))
    expected = (direct.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.abs(np.asarray(Image.open(entry.path)).astype(int) - expected).max() <= 1
    stamp = entry.path.stat().st_mtime_ns
    at.button(key="render_channel").click().run()
    assert at.success[0].value == "2:5: from the gallery"
    assert entry.path.stat().st_mtime_ns == stamp and len(gallery) == 1


def test_app_renders_a_layer_in_batches_and_lists_the_gallery(tiny_factory, tmp_path, monkeypatch) -> None:
    pytest.importorskip("streamlit", reason="the app needs the 'app' extra (streamlit)")
    at = _choose_factory(_app(tmp_path, monkeypatch).run(), tiny_factory)
    at.selectbox(key="layer").set_value("0").run()
    at.number_input(key="channel").set_value(1)
    at.button(key="render_channel").click().run()
    at.text_input(key="channels").set_value("all")
    at.number_input(key="batch_size").set_value(3)
    at.button(key="render_layer").click().run()
    assert not at.exception
    assert at.success[0].value == "0: 1 from the gallery, 3 rendered"
    images = at.get("image")
    render_captions = [c for im in images for c in im.captions if ":" in c and "·" not in c]
    assert render_captions == ["0:0", "0:1", "0:2", "0:3"]
    gallery_captions = [c for im in images for c in im.captions if "·" in c]
    assert gallery_captions == [f"{tiny_factory} · 0:{c} · 16px 2 steps" for c in range(4)]
    assert len(Gallery(tmp_path / "gallery")) == 4
    at.text_input(key="channels").set_value("0:9")
    at.button(key="render_layer").click().run()
    assert "out of range" in at.error[0].value


def test_app_loads_an_uploaded_torchscript_file(tiny_factory, tmp_path, monkeypatch) -> None:
    pytest.importorskip("streamlit", reason="the app needs the 'app' extra (streamlit)")
    from app_tiny_models import tiny_net

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(tiny_net()), buffer)
    at = _app(tmp_path, monkeypatch).run()
    at.radio(key="source").set_value("Upload a file").run()
    assert at.info[0].value == "Choose a model in the sidebar."
    at.file_uploader(key="upload").set_value(("tiny.pt", b"garbage", "application/octet-stream")).run()
    assert "holds a state dict; choose the architecture" in at.sidebar.error[0].value
    at.selectbox(key="architecture").set_value("efficientnet_lite0").run()
    assert "neither a TorchScript file nor a state dict" in at.sidebar.error[0].value
    at.selectbox(key="architecture").set_value("(TorchScript: none)")
    at.file_uploader(key="upload").set_value(("tiny.pt", buffer.getvalue(), "application/octet-stream")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "upload:tiny.pt" in at.caption[0].value
    assert list(at.dataframe[0].value["layer"])[:3] == ["0", "1", "2"]


# ------------------------------------------------------------------------------------ headless Chromium


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium_or_skip():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("chromium / chromedriver not installed (run .ci/setup_browser.sh)")
    pytest.importorskip("selenium", reason="the browser test drives Chromium with selenium")
    pytest.importorskip("streamlit", reason="the app needs the 'app' extra (streamlit)")
    return chromium, driver


def test_app_in_headless_chromium(tmp_path) -> None:
    chromium, driver_path = _chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # a gallery with one real render in it, to be browsed in the page
    gallery = Gallery(tmp_path / "gallery")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    (tile,) = render_channels(model, "0", [1], RenderSettings(size=64, steps=4))
    gallery.add("demo_net", weights_hash(model), "0", 1, RenderSettings(size=64, steps=4).as_dict(), tile)

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false", "--",
         "--data-dir", str(tmp_path / "gallery")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(tmp_path),
    )
    browser = None
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.3)
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
            options.add_argument(flag)
        browser = webdriver.Chrome(service=Service(driver_path), options=options)
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 90, poll_frequency=0.5)
        wait.until(lambda b: "renderable layers" in b.find_element(By.TAG_NAME, "body").text)
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "optim: feature visualization" in body and "efficientnet_lite0" in body
        assert browser.title == "optim feature visualization"
        tabs = browser.find_elements(By.CSS_SELECTOR, "[role='tab']")
        tab = next(t for t in tabs if "Gallery" in t.text)
        tab.click()
        wait.until(lambda b: any(i.is_displayed() and i.size["width"] > 50 for i in b.find_elements(
            By.CSS_SELECTOR, "img[src*='media']")))
        time.sleep(1.0)  # let the image finish painting
        shot = tmp_path / "app.png"
        assert browser.save_screenshot(str(shot))
        keep = os.environ.get("OPTIM_SCREENSHOT")
        if keep:
            shutil.copy(shot, keep)
        assert "demo_net · 0:1 · 64px 4 steps" in browser.find_element(By.TAG_NAME, "body").text
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        server.wait(timeout=30)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.float64)
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 1000
    assert pixels.std() > 10.0  # not a blank page
    # the rendered tile is on screen: many distinct colours, unlike the flat page background
    assert len(np.unique(pixels.reshape(-1, 3).astype(np.uint8), axis=0)) > 500
