"""The app: gallery store (confinement, concurrent writers, damaged index), model sources, the launcher, the
Streamlit script (AppTest), its security against a real server on 127.0.0.1, and one run in headless Chromium."""
import http.cookies
import io
import multiprocessing
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from optim.app.gallery import DATA_DIR_ENV, Gallery, GalleryIndexError, resolve_data_dir, settings_key
from optim.app.launch import announcement, app_command, app_config, build_parser
from optim.app.rendering import RenderSettings, render_channels
from optim.models.loading import is_torchscript, load_factory, load_model, load_weights_file, weights_hash

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


class Evil(nn.Module):
    """A model whose forward writes a file (TorchScript can: ``torch.from_file(shared=True)``)."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        touched = torch.from_file(self.marker, shared=True, size=4, dtype=torch.uint8)
        touched.fill_(1)
        return self.conv(x) + touched[0].float() * 0


def _evil_torchscript(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Evil(str(marker))), buffer)
    return buffer.getvalue()


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
    with pytest.raises(ValueError, match="batch of 2"):
        gallery.add("m", "h", "l", 0, {}, torch.rand(2, 3, 2, 2))
    with pytest.raises(ValueError, match="3 non-finite values"):  # never stored as a black image
        gallery.add("m", "h", "l", 0, {}, torch.tensor([[[0.5, float("nan")]]]).expand(3, 1, 2))
    assert list((tmp_path / "images").iterdir()) == []  # a refused image leaves no file, not even a temporary one
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


def test_gallery_data_dir_is_confined_to_the_root(tmp_path) -> None:
    """Issue 14 item 4: the data directory lives under a root chosen at launch."""
    root = tmp_path / "root"
    assert Gallery(None, root=root).data_dir == root
    assert Gallery("team/a", root=root).data_dir == root / "team" / "a"
    assert Gallery("team/../b", root=root).data_dir == root / "b"  # stays inside: allowed
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    for bad in ("../x", "../../x", "team/../../x", str(tmp_path / "elsewhere"), "/etc", "link", "link/sub"):
        with pytest.raises(ValueError, match="leaves the data root") as info:
            Gallery(bad, root=root)
        assert repr(bad) in str(info.value) and str(root) in str(info.value)
    assert not (tmp_path / "x").exists() and not (tmp_path / "elsewhere").exists()
    assert list((tmp_path / "outside").iterdir()) == []  # nothing was created through the link


def test_gallery_refuses_index_rows_that_leave_the_images_folder(tmp_path) -> None:
    """Issue 14 item 4: the `file` column is resolved and refused if it leaves the gallery's folder."""
    gallery = Gallery(tmp_path / "g")
    good = gallery.add("m", "h", "l", 0, {"s": 1}, torch.rand(3, 4, 4))
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(secret)
    (tmp_path / "g" / "images" / "link.png").symlink_to(secret)
    rows = [("../../secret.png", 1), (str(secret), 2), ("link.png", 3), ("sub/../../../secret.png", 4)]
    with sqlite3.connect(gallery.index_path) as conn:
        for file, channel in rows:
            conn.execute(
                "INSERT INTO renders (model, weights_hash, layer, channel, settings_key, settings, file, width, "
                "height, created) VALUES ('m', 'h', 'l', ?, ?, ?, ?, 4, 4, 0)",
                (channel, settings_key({"s": 1}), settings_key({"s": 1}), file),
            )
    for file, channel in rows:
        with pytest.warns(UserWarning, match="is not inside") as record:
            assert gallery.get("m", "h", "l", channel, {"s": 1}) is None
        assert repr(file) in str(record[0].message)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        listed = gallery.entries()
    assert [e.path for e in listed] == [good.path] and len(caught) == 4
    # a render under a refused key replaces the row (the gallery heals itself), without touching the target
    fresh = gallery.add("m", "h", "l", 1, {"s": 1}, torch.rand(3, 4, 4))
    assert fresh.path.parent == tmp_path / "g" / "images" and np.asarray(Image.open(secret)).max() == 0


# ------------------------------------------------------------------ issue 16: render-model runs in the gallery


RUN_UNITS = [("0", c) for c in range(4)] + [("2", c) for c in range(6)]


def _job(folder: Path) -> dict:
    """A finished render-model run of a tiny two-layer model in ``folder``; returns its index."""
    import json

    from optim.jobs import render_model

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3))
    render_model(net, ["0", "2"], folder, steps=2, size=16, batch_size=4, log=None, model_name="tiny")
    return json.loads((folder / "index.json").read_text())


def test_run_folders_are_found_and_read_finished_or_in_progress(tmp_path) -> None:
    from optim.app.runs import find_runs, open_run

    root = tmp_path / "root"
    index = _job(root / "runs" / "a")
    Gallery("g", root=root)  # a gallery beside it is no run
    assert find_runs(root) == [(root / "runs" / "a").resolve()]
    assert find_runs(root, max_depth=0) == [] and find_runs(tmp_path / "missing") == []
    run = open_run("runs/a", root=root)
    assert run.complete and run.model == "tiny" and run.settings == index["run"] and run.layers() == ["0", "2"]
    assert [(e.layer, e.channel) for e in run.entries()] == RUN_UNITS
    assert [e.path for e in run.entries("2")] == [root / "runs" / "a" / "2" / f"{c}.png" for c in range(6)]
    assert [e.objective_after for e in run.entries()] == [u["objective_after"] for u in index["units"]]
    assert [e.objective_before for e in run.entries()] == [u["objective_before"] for u in index["units"]]
    assert {e.rank for e in run.entries()} == {0} and run.entries("0")[3].caption == "0:3"
    assert run.summary() == f"tiny (weights {index['run']['weights_sha256']}): 10 channels in 2 layers; 16 px, " \
        "2 steps, seed 0"
    # a run still going: no index.json yet, one unit not done; read from job.json and the records so far
    (root / "runs" / "a" / "index.json").unlink()
    (root / "runs" / "a" / "2" / "1.json").unlink()
    (root / "runs" / "a" / "2" / ".7.json.x.tmp").write_text("{")  # a record being written
    assert find_runs(root) == [(root / "runs" / "a").resolve()]
    partial = open_run(root / "runs" / "a", root=root)  # an absolute path inside the root is fine too
    assert not partial.complete and partial.settings == index["run"]
    assert [(e.layer, e.channel) for e in partial.entries()] == [u for u in RUN_UNITS if u != ("2", 1)]
    assert partial.summary().endswith("9 channels in 2 layers so far (in progress: no index.json yet); 16 px, "
                                      "2 steps, seed 0")
    with pytest.raises(ValueError, match="holds no render job \\(neither index.json nor job.json\\)"):
        open_run("g", root=root)
    (root / "runs" / "b").mkdir()
    (root / "runs" / "b" / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="index.json cannot be read as JSON"):
        open_run("runs/b", root=root)
    (root / "runs" / "b" / "index.json").write_text("[]")
    with pytest.raises(ValueError, match="is not a render job's index"):
        open_run("runs/b", root=root)


def test_run_folders_are_confined_to_the_root_and_their_files_to_the_run(tmp_path) -> None:
    import json

    from optim.app.runs import find_runs, open_run

    root, outside = tmp_path / "root", tmp_path / "outside"
    index = _job(outside / "run")
    root.mkdir()
    (root / "link").symlink_to(outside)
    for bad in ("../outside/run", str(outside / "run"), "link/run", "/etc"):
        with pytest.raises(ValueError, match="the run folder .* leaves the data root") as info:
            open_run(bad, root=root)
        assert repr(bad) in str(info.value)
    assert find_runs(root) == []  # links are not followed
    # a run inside the root whose records point elsewhere: each such unit is refused with a warning
    folder = root / "run"
    _job(folder)
    secret = outside / "secret.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(secret)
    units = index["units"]
    units[0]["file"] = "../../outside/secret.png"  # 0:0
    units[1]["channel"] = -1  # not a unit of the run
    units[2]["layer"] = "../x"  # nor this
    (folder / "0" / "3.png").unlink()
    (folder / "0" / "3.png").symlink_to(secret)  # a PNG that is a link out of the run
    (folder / "index.json").write_text(json.dumps(index))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = open_run("run", root=root)
    assert [(e.layer, e.channel) for e in run.entries()] == RUN_UNITS[4:]
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 4, messages
    assert any("its file '../../outside/secret.png' is not '0/0.png' inside the run folder" in m for m in messages)
    assert any("layer '0', channel -1 is not a unit of the run" in m for m in messages)
    assert any("layer '../x', channel 2 is not a unit of the run" in m for m in messages)
    assert any(f"unit 0:3 of {folder}: 0/3.png is a link to {secret}, outside {folder / '0'}" in m for m in messages)
    # a layer folder that is a link out of the run
    shutil.move(str(folder / "2"), str(outside / "2"))
    (folder / "2").symlink_to(outside / "2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert open_run("run", root=root).entries("2") == []
    assert sum(f"2/{c}.png is a link to {outside / '2' / f'{c}.png'}" in str(w.message) for w in caught
               for c in range(6)) == 6


def test_app_gallery_opens_a_render_model_run(tmp_path, monkeypatch) -> None:
    pytest.importorskip("streamlit", reason="the app needs the 'app' extra (streamlit)")
    at = _app(tmp_path, monkeypatch).run()
    at.radio(key="gallery_source").set_value("Render-model runs").run()
    assert not at.exception and "No render-model run under" in at.info[0].value
    index = _job(tmp_path / "gallery" / "jobs" / "tiny")
    at.run()
    assert at.selectbox(key="run_folder").options == ["jobs/tiny"]
    assert at.selectbox(key="run_layer").options == ["0  (4 channels)", "2  (6 channels)"]
    captions = [c for im in at.get("image") for c in im.captions]
    assert captions == [f"{u['channel']} · {u['objective_after']:.3g}" for u in index["units"][:4]]
    at.selectbox(key="run_layer").set_value("2").run()
    assert [c for im in at.get("image") for c in im.captions][0] == f"0 · {index['units'][4]['objective_after']:.3g}"
    at.text_input(key="run_path").set_value("../elsewhere").run()
    assert not at.exception and "the run folder '../elsewhere' leaves the data root" in at.error[0].value


def _add_many(data_dir: str, key_channel: int, images: list, errors: list) -> None:
    gallery = Gallery(data_dir)
    for image in images:
        try:
            gallery.add("m", "h", "layer", key_channel, {"steps": 1}, image)
        except Exception as err:  # noqa: BLE001 - collected and asserted empty
            errors.append(repr(err))


def _process_writer(data_dir: str, seed: int, queue) -> None:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(20)]
    errors: list = []
    threads = [threading.Thread(target=_add_many, args=(data_dir, 0, images[i::2], errors)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put((errors, [im.tobytes() for im in images]))


def test_gallery_concurrent_writers_leave_only_valid_pngs(tmp_path) -> None:
    """Issue 14 item 6: 8 threads x 25 adds to one key, plus two writer processes: no error, only valid PNGs."""
    rng = np.random.default_rng(0)
    per_thread = [[rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(25)] for _ in range(8)]
    written = {im.tobytes() for images in per_thread for im in images}
    Gallery(tmp_path)  # the index exists before the race, as in the app
    with closing(sqlite3.connect(tmp_path / "index.sqlite")) as conn:  # readers never meet a rollback journal
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    errors: list = []
    threads = [threading.Thread(target=_add_many, args=(str(tmp_path), 0, images, errors)) for images in per_thread]
    context = multiprocessing.get_context("fork") if hasattr(os, "fork") else None
    queue = context.Queue() if context else None
    processes = [context.Process(target=_process_writer, args=(str(tmp_path), s, queue)) for s in (1, 2)] if context else []
    for worker in processes + threads:  # fork before any thread holds an SQLite connection (SQLite's rule)
        worker.start()
    results = [queue.get(timeout=120) for _ in processes]
    for worker in threads + processes:
        worker.join(timeout=120)
    assert errors == [] and all(r[0] == [] for r in results)
    assert all(p.exitcode == 0 for p in processes)
    for _, images in results:
        written.update(images)
    files = sorted((tmp_path / "images").iterdir())
    assert [f.suffix for f in files] == [".png"]  # one file for the key, no temporary file left behind
    with Image.open(files[0]) as im:
        im.load()  # a complete PNG (a truncated one raises here)
        assert np.asarray(im).tobytes() in written  # and exactly one writer's image, not a mix
    gallery = Gallery(tmp_path)
    (entry,) = gallery.entries()
    assert entry.path == files[0] and len(gallery) == 1


def test_damaged_index_names_the_file_and_destroys_nothing(tmp_path) -> None:
    """Issue 14 item 7: a damaged index.sqlite: an error naming the file and how to recover; no data lost."""
    gallery = Gallery(tmp_path)
    stored = [gallery.add("m", "h", "l", c, {"steps": 2}, torch.rand(3, 8, 8)) for c in range(3)]
    pngs = {e.path.name: e.path.read_bytes() for e in stored}
    index = tmp_path / "index.sqlite"
    index.write_bytes(b"this is not an sqlite database" * 100)
    damaged = index.read_bytes()
    for attempt in (lambda: Gallery(tmp_path), lambda: gallery.get("m", "h", "l", 0, {"steps": 2}),
                    lambda: gallery.add("m", "h", "l", 9, {"steps": 2}, torch.rand(3, 8, 8)), lambda: len(gallery)):
        with pytest.raises(GalleryIndexError) as info:
            attempt()
        message = str(info.value)
        assert str(index) in message and "file is not a database" in message
        assert "Gallery.recover(" in message and "nothing was changed" in message
        assert index.read_bytes() == damaged  # never overwritten
    assert all((tmp_path / "images" / n).read_bytes() == b for n, b in pngs.items())
    # recovery: the damaged index is kept aside, the index rebuilt from the PNGs' own key chunks
    recovered, indexed, skipped = Gallery.recover(tmp_path)
    assert (indexed, skipped) == (4, [])  # the three, and the image add() wrote before the index failed
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("index.sqlite.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes() == damaged
    for c in range(3):
        entry = recovered.get("m", "h", "l", c, {"steps": 2})
        assert entry is not None and entry.path.read_bytes() == pngs[entry.path.name]
    # an index damaged inside (a valid header, garbage pages) is caught at query time as well
    with closing(sqlite3.connect(recovered.index_path)) as conn, conn:  # closed: the rows reach the main file
        conn.executemany("INSERT INTO renders (model, weights_hash, layer, channel, settings_key, settings, file, "
                         "width, height, created) VALUES ('x', 'h', 'l', ?, '{}', '{}', 'f.png', 1, 1, 0)",
                         [(i,) for i in range(2000)])
    raw = bytearray(recovered.index_path.read_bytes())
    raw[4096:] = b"\xff" * (len(raw) - 4096)
    recovered.index_path.write_bytes(bytes(raw))
    with pytest.raises(GalleryIndexError, match="malformed|not a database"):
        recovered.entries()


def _older_index(data_dir, rows: int) -> Path:
    """An index as a version before write-ahead logging wrote it: rollback journal, ``rows`` rows."""
    from optim.app.gallery import _SCHEMA

    index = data_dir / "index.sqlite"
    with closing(sqlite3.connect(index)) as conn, conn:
        conn.execute(_SCHEMA)
        conn.executemany("INSERT INTO renders (model, weights_hash, layer, channel, settings_key, settings, file, "
                         "width, height, created) VALUES ('x', 'h', 'l', ?, '{}', '{}', 'f.png', 1, 1, 0)",
                         [(i,) for i in range(rows)])
    with closing(sqlite3.connect(index)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    return index


def test_an_older_index_moves_to_the_write_ahead_log_unless_it_is_damaged(tmp_path) -> None:
    """A healthy rollback-journal index is switched to WAL with its rows; a damaged one is refused untouched."""
    (tmp_path / "a").mkdir()
    healthy = _older_index(tmp_path / "a", 3)
    assert len(Gallery(tmp_path / "a")) == 3
    with closing(sqlite3.connect(healthy)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # page 1 (the schema) intact, every later page garbage: the switch would rewrite the header, so it is refused
    (tmp_path / "b").mkdir()
    damaged = _older_index(tmp_path / "b", 2000)
    raw = bytearray(damaged.read_bytes())
    raw[4096:] = b"\xff" * (len(raw) - 4096)
    damaged.write_bytes(bytes(raw))
    with pytest.raises(GalleryIndexError, match="integrity_check") as info:
        Gallery(tmp_path / "b")
    assert "nothing was changed" in str(info.value)
    assert damaged.read_bytes() == bytes(raw)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["images", "index.sqlite"]


def test_only_a_damaged_index_is_reported_as_damaged(tmp_path, monkeypatch) -> None:
    """Busy, read-only or I/O errors pass through as SQLite raised them: rebuilding the index would not help."""
    _older_index(tmp_path, 1)

    def connect_read_only(self):  # a file this user may not write (a file mode would not stop root)
        return sqlite3.connect(f"file:{self.index_path}?mode=ro", uri=True, timeout=1, isolation_level="IMMEDIATE")

    with monkeypatch.context() as patch:
        patch.setattr(Gallery, "_connect", connect_read_only)
        gallery = Gallery(tmp_path)
        assert len(gallery) == 1  # reading works: the refused switch to the write-ahead log is no damage
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            gallery.add("m", "h", "l", 1, {"steps": 2}, torch.rand(3, 8, 8))
    with closing(sqlite3.connect(tmp_path / "index.sqlite")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # it kept its mode
    errors = []
    for text, name in (("disk I/O error", "SQLITE_IOERR"), ("database is locked", "SQLITE_BUSY"),
                       ("database or disk is full", "SQLITE_FULL"), ("bad page", "SQLITE_CORRUPT")):
        err = sqlite3.OperationalError(text)
        err.sqlite_errorname = name
        errors.append(err)

    def failing(self):
        raise errors.pop(0)

    monkeypatch.setattr(Gallery, "_connect", failing)
    for text in ("disk I/O error", "database is locked", "database or disk is full"):
        with pytest.raises(sqlite3.OperationalError, match=text):
            len(gallery)
    with pytest.raises(GalleryIndexError, match=r"\(bad page, SQLITE_CORRUPT\)"):  # by SQLite's name, not the text
        len(gallery)


def test_a_folder_this_user_cannot_write_is_browsed_read_only(tmp_path, monkeypatch) -> None:
    """A gallery whose folder this user cannot write is browsed: reads work and see the owner's new renders, adds
    and renders are refused before any work (root ignores folder modes, so the check is faked here)."""
    gallery = Gallery(tmp_path)
    stored = gallery.add("m", "h", "l", 0, {"steps": 2}, torch.rand(3, 8, 8))
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if mode == os.W_OK else access(path, mode, **kw))
    browsed = Gallery(tmp_path)
    assert browsed.read_only and not gallery.read_only
    assert browsed.get("m", "h", "l", 0, {"steps": 2}).path == stored.path and len(browsed) == 1
    with pytest.raises(PermissionError, match="read-only for this user"):
        browsed.add("m", "h", "l", 1, {"steps": 2}, torch.rand(3, 8, 8))
    rendered = []
    with pytest.raises(PermissionError, match="l:1 is not in it"):
        browsed.get_or_render("m", "h", "l", 1, {"steps": 2}, lambda: rendered.append(1) or torch.rand(3, 8, 8))
    assert rendered == []  # refused before rendering
    gallery.add("m", "h", "l", 2, {"steps": 2}, torch.rand(3, 8, 8))  # the owner renders on
    assert len(browsed) == 2
    with closing(browsed._connect()) as conn, pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM renders")  # the connection itself cannot write
    # where SQLite cannot read the write-ahead log without lock files, the index is read as immutable
    browsed._immutable = True
    with closing(browsed._connect()) as conn:
        assert conn.execute("SELECT COUNT(*) FROM renders").fetchone() == (2,)


def test_a_database_that_is_not_a_gallery_index_is_refused(tmp_path) -> None:
    with closing(sqlite3.connect(tmp_path / "index.sqlite")) as conn, conn:
        conn.execute("CREATE TABLE renders (a, b)")
    with pytest.raises(GalleryIndexError, match=r"not a gallery index: its table 'renders' lacks \['id', 'model'"):
        Gallery(tmp_path)
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").iterdir())


# ------------------------------------------------------------------------------------------ model sources


def test_weights_hash_and_files(tiny_factory, tmp_path) -> None:
    model = load_model(tiny_factory)
    same = load_model(tiny_factory)
    assert weights_hash(model) == weights_hash(same) and len(weights_hash(model)) == 16
    with torch.no_grad():
        same[0].bias[0] += 1e-6
    assert weights_hash(model) != weights_hash(same)
    # a state dict file needs the architecture
    torch.save(same.state_dict(), tmp_path / "w.pt")
    assert not is_torchscript(tmp_path / "w.pt")
    loaded = load_weights_file(tmp_path / "w.pt", load_model(tiny_factory))
    assert weights_hash(loaded) == weights_hash(same)
    with pytest.raises(ValueError, match="choose the architecture"):
        load_weights_file(tmp_path / "w.pt")
    with pytest.raises(ValueError, match="not a weights file: neither a TorchScript file nor a state dict"):
        load_weights_file(b"not a checkpoint", model)
    with pytest.raises(ValueError, match=r"is 0.0 MiB, over the limit of 0.0 MiB"):  # the upload size limit
        load_weights_file((tmp_path / "w.pt").read_bytes(), model, max_bytes=100)


def test_torchscript_is_refused_unless_allowed_and_nothing_runs(tmp_path) -> None:
    """Issue 14 item 2: TorchScript is loaded only with an explicit flag; refusing it runs nothing."""
    marker = tmp_path / "marker.bin"
    data = _evil_torchscript(marker)
    assert is_torchscript(data) and not marker.exists()
    (tmp_path / "evil.pt").write_bytes(data)
    for source in (data, tmp_path / "evil.pt"):
        with pytest.raises(ValueError, match="is a TorchScript archive and was refused: loading it runs the code"):
            load_weights_file(source, nn.Conv2d(3, 4, 3))
        with pytest.raises(ValueError, match="--unsafe-allow-torchscript"):
            load_model("efficientnet_lite0", weights=source)
    assert not marker.exists()
    trusted = load_weights_file(data, allow_torchscript=True)  # the operator's explicit choice
    trusted(torch.rand(1, 3, 8, 8))
    assert marker.read_bytes() == b"\x01" * 4  # proof that the marker detects execution


def test_factory_allow_list_is_checked_before_import(tmp_path, monkeypatch) -> None:
    """Issue 14 item 3: never import or call a factory before checking the allow-list."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "app_side_effect.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\ndef make():\n    open({str(marker)!r}, 'w').write('called')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("app_side_effect", None)
    for allowed in ([], ["other.module:make"], ["app_side_effect:other"], ["app_side:*"]):
        with pytest.raises(ValueError, match="'app_side_effect:make' is not allowed here"):
            load_factory("app_side_effect:make", allowed=allowed)
        with pytest.raises(ValueError, match="is not allowed here"):
            load_model("app_side_effect:make", allowed_factories=allowed)
    with pytest.raises(ValueError, match="looks like 'package.module:function'"):
        load_factory("os.system('x'):y", allowed=None)
    assert not marker.exists() and "app_side_effect" not in sys.modules
    assert load_factory("app_side_effect:make", allowed=["app_side_effect:*"]).__name__ == "make"
    assert marker.read_text() == "imported"


def test_a_module_wildcard_allows_only_what_the_module_defines(tmp_path, monkeypatch) -> None:
    """'nets:*' must not reach what nets imports: 'nets:os.abort' would kill the server from a browser field."""
    (tmp_path / "app_wild_nets.py").write_text(
        "import os\nimport torch.nn as nn\nfrom torch.nn import Sequential\n"
        "def small():\n    return nn.Sequential(nn.Conv2d(3, 4, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    allowed = ["app_wild_nets:*"]
    assert load_factory("app_wild_nets:small", allowed=allowed).__name__ == "small"
    for spec in ("app_wild_nets:os.abort", "app_wild_nets:nn.Sequential"):
        with pytest.raises(ValueError, match="not attributes of what it imports"):
            load_factory(spec, allowed=allowed)
    for spec in ("app_wild_nets:Sequential", "app_wild_nets:os"):  # imported into it, not defined there
        with pytest.raises(ValueError, match="list it by its own name"):
            load_factory(spec, allowed=allowed)
    assert load_factory("app_wild_nets:Sequential", allowed=allowed + ["app_wild_nets:Sequential"]) is nn.Sequential


def test_render_channels_batches_match_single_renders(tiny_factory) -> None:
    model = load_model(tiny_factory)
    settings = RenderSettings(size=12, steps=2, seed=3)
    # the gallery key also names the render defaults it does not set, so renders made under other defaults are
    # not reused; the app's own defaults are the library's
    from optim.jobs import _render_defaults
    from optim.optimization.defaults import DEFAULT_AVERAGE, DEFAULT_DECAY_POWER, DEFAULT_LR, DEFAULT_STEPS

    assert settings.as_dict() == {"size": 12, "steps": 2, "seed": 3, "lr": DEFAULT_LR, **_render_defaults(),
                                  "average": {"weights": "polynomial", "window": DEFAULT_AVERAGE}}  # renders average
    assert settings.as_dict()["decay_power"] == DEFAULT_DECAY_POWER
    assert (RenderSettings().size, RenderSettings().steps, RenderSettings().lr) == (None, DEFAULT_STEPS, DEFAULT_LR)
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
    with pytest.raises(ValueError, match="size must be a positive int or \\(height, width\\)"):
        RenderSettings(size=0)


class _Declared(nn.Sequential):
    """A model that declares its input as timm does: 24 x 20 px, normalized with mean 0.5 and std 0.25."""

    pretrained_cfg = {"input_size": (3, 24, 20), "mean": (0.5,) * 3, "std": (0.25,) * 3}


def test_render_channels_without_a_size_render_as_render_layer(tmp_path) -> None:
    """No render numbers of the app's own: the model's native size and normalization, via render_inputs."""
    from optim.optimization.defaults import DEFAULT_SIZE
    from optim.render import render_layer

    torch.manual_seed(0)
    model = _Declared(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    settings = RenderSettings(steps=2, seed=1)
    assert settings.for_model(model).size == (24, 20) and settings.for_model(model).as_dict()["size"] == [24, 20]
    assert settings.for_model(nn.Conv2d(3, 4, 3)).size == DEFAULT_SIZE
    assert RenderSettings(size=(16, 16)).size == 16  # a square is one int, so equal settings key alike
    tiles = render_channels(model, "0", [1, 3], settings)
    reference = render_layer(model, "0", channels=[1, 3], steps=2, seed=1, progress=False)
    assert [tuple(t.shape) for t in tiles] == [(3, 24, 20)] * 2
    torch.testing.assert_close(torch.stack(tiles), reference.as_subclass(torch.Tensor), rtol=0, atol=0)
    unnormalized = render_layer(model, "0", channels=[1, 3], steps=2, seed=1, progress=False, preprocess=nn.Identity())
    assert not torch.equal(torch.stack(tiles), unnormalized.as_subclass(torch.Tensor))


# ------------------------------------------------------------------------------------------------ launcher


def test_launcher_binds_loopback_unless_told_and_says_so(tmp_path) -> None:
    """Issue 14 item 1: 127.0.0.1 by default; another address only by flag, announced at start-up."""
    args = build_parser().parse_args(["--data-dir", str(tmp_path), "--headless", "--", "--theme.base", "dark"])
    command = app_command(args)
    assert command[:5] == [sys.executable, "-m", "streamlit", "run", str(APP)]
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.port") + 1] == "8501"
    assert command[command.index("--server.maxUploadSize") + 1] == "100"
    assert "--theme.base" in command and "--unsafe-allow-torchscript" not in command
    assert command[command.index("--") + 1:] == ["--data-dir", str(tmp_path), "--max-upload-mb", "100"]
    lines = announcement(args)
    assert lines[0] == ("optim app: serving http://127.0.0.1:8501 to this machine only "
                        "(--address HOST to listen elsewhere)")
    assert str(tmp_path) in lines[1] and len(lines) == 2
    wide = build_parser().parse_args(["--address", "0.0.0.0", "--port", "9000", "--max-upload-mb", "5",
                                      "--unsafe-allow-torchscript", "--unsafe-allow-factory", "nets:small"])
    command = app_command(wide)
    assert command[command.index("--server.address") + 1] == "0.0.0.0"
    assert command[command.index("--server.maxUploadSize") + 1] == "5"
    assert command[command.index("--") + 1:][-3:] == ["--unsafe-allow-torchscript", "--unsafe-allow-factory",
                                                      "nets:small"]
    text = "\n".join(announcement(wide))
    assert "WARNING: listening on 0.0.0.0:9000, which other machines can reach" in text
    assert "WARNING: --unsafe-allow-torchscript" in text and "imports and calls nets:small" in text
    for reserved in ("--server.address", "--server.port=1", "--server.maxUploadSize"):
        with pytest.raises(ValueError, match=f"{reserved.split('=')[0]} is set by optim app's"):
            app_command(build_parser().parse_args(["--", reserved, "1"]))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--unsafe-allow-factory", "not a factory"])
    config = app_config(["--data-dir", str(tmp_path), "--unsafe-allow-factory", "a.b:c", "--pytest-flag", "-x"])
    assert (config.data_root, config.allow_torchscript, config.factories) == (tmp_path, False, ("a.b:c",))
    assert app_config([]).factories == () and not app_config([]).allow_torchscript


CHILD = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGINT, lambda *a: sys.exit(7))
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(8))
    print("ready", flush=True)
    time.sleep(60)
    """
)
PARENT = textwrap.dedent(
    """
    import sys
    from optim._process import run_forwarding_signals
    sys.exit(run_forwarding_signals([sys.executable, "-c", sys.argv[1]]))
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL") or not os.path.exists("/proc"), reason="POSIX signals, /proc")
@pytest.mark.parametrize("signum, expected", [(signal.SIGINT, 7), (signal.SIGTERM, 8), (signal.SIGKILL, None)])
def test_signals_to_the_launcher_stop_its_child(signum, expected) -> None:
    """Issue 14 item 5 at the process level: SIGINT / SIGTERM are forwarded and waited for; a parent killed
    outright (SIGKILL) still takes its child along (Linux's parent-death signal)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE, env=env)
    try:
        assert parent.stdout.readline() == b"ready\n"
        (child,) = _descendants(parent.pid)
        parent.send_signal(signum)
        code = parent.wait(timeout=30)
        if expected is not None:
            assert code == expected  # the child's own exit code: it got the signal and stopped
        deadline = time.time() + 10
        while _alive(child) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()


# ---------------------------------------------------------------------------------------------- AppTest


def _app(tmp_path, monkeypatch, *flags):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "gallery"))
    monkeypatch.setattr(sys, "argv", [str(APP), *flags])  # what the launcher passes after "--"
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
    at = _app(tmp_path, monkeypatch, "--unsafe-allow-factory", tiny_factory).run()
    assert not at.exception
    assert at.title[0].value == "optim: feature visualization"
    assert at.text_input(key="data_dir").value == ""  # the data root itself
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
    at = _choose_factory(_app(tmp_path, monkeypatch, "--unsafe-allow-factory", "app_tiny_models:*").run(),
                         tiny_factory)
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


def test_app_renders_nothing_on_a_gallery_this_user_cannot_write(tiny_factory, tmp_path, monkeypatch) -> None:
    pytest.importorskip("streamlit", reason="the app needs the 'app' extra (streamlit)")
    settings = RenderSettings(size=16, steps=2, seed=0).as_dict()
    Gallery(tmp_path / "gallery").add(tiny_factory, weights_hash(load_model(tiny_factory)), "0", 0, settings,
                                      torch.rand(3, 16, 16))
    access = os.access  # root ignores folder modes: the check is faked, as in the gallery's own test
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if mode == os.W_OK else access(path, mode, **kw))
    monkeypatch.setattr("optim.render.render_layer", lambda *a, **k: pytest.fail("rendered"))  # nothing renders
    at = _choose_factory(_app(tmp_path, monkeypatch, "--unsafe-allow-factory", tiny_factory).run(), tiny_factory)
    assert not at.exception and not at.error
    assert "is read-only for this user" in at.info[0].value
    at.selectbox(key="layer").set_value("0").run()
    at.text_input(key="channels").set_value("0:3")
    at.button(key="render_layer").click().run()
    assert not at.exception and not at.error
    assert at.warning[0].value == "2 of 3 channels are not in this read-only gallery (0:1, 2)"
    assert at.success[0].value == "0: 1 from the gallery, 0 rendered"
    assert [c for im in at.get("image") for c in im.captions][:1] == ["0:0"]  # what it has is shown
    at.number_input(key="channel").set_value(1)
    at.button(key="render_channel").click().run()
    assert "read-only for this user: 0:1 is not in it" in at.error[0].value
    assert len(Gallery(tmp_path / "gallery")) == 1


def test_app_without_flags_offers_no_factory_and_no_torchscript(tiny_factory, tmp_path, monkeypatch) -> None:
    """Items 2-4 in the page: no factory field, state dicts only, a gallery folder inside the root."""
    pytest.importorskip("streamlit", reason="the app needs the 'app' extra (streamlit)")
    at = _app(tmp_path, monkeypatch).run()
    assert at.radio(key="source").options == ["Model zoo", "Upload weights"]
    at.radio(key="source").set_value("Upload weights").run()
    assert "(TorchScript: none)" not in at.selectbox(key="architecture").options
    marker = tmp_path / "marker.bin"
    at.file_uploader(key="upload").set_value(("evil.pt", _evil_torchscript(marker), "application/octet-stream")).run()
    assert "is a TorchScript archive and was refused" in at.sidebar.error[0].value
    assert not marker.exists()
    state = load_model("efficientnet_lite0").state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    at.file_uploader(key="upload").set_value(("lite0.pt", buffer.getvalue(), "application/octet-stream")).run()
    assert not at.error and "upload:lite0.pt" in at.caption[0].value
    at.text_input(key="data_dir").set_value("../escape").run()
    assert "leaves the data root" in at.error[0].value and not (tmp_path / "escape").exists()
    at.text_input(key="data_dir").set_value("team").run()
    assert not at.error and (tmp_path / "gallery" / "team" / "index.sqlite").is_file()


def test_app_factory_field_checks_the_allow_list_first(tiny_factory, tmp_path, monkeypatch) -> None:
    """Issue 14 item 3 in the page: a factory outside the allow-list is neither imported nor called."""
    pytest.importorskip("streamlit", reason="the app needs the 'app' extra (streamlit)")
    marker = tmp_path / "side_effect.txt"
    (tmp_path / "app_page_side_effect.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported ')\ndef make():\n    open({str(marker)!r}, 'a').write('called')\n"
    )
    sys.modules.pop("app_page_side_effect", None)
    at = _app(tmp_path, monkeypatch, "--unsafe-allow-factory", tiny_factory).run()
    at.radio(key="source").set_value("Python factory").run()
    for spec in ("app_page_side_effect:make", "os:abort", "app_tiny_models:other"):
        at.text_input(key="factory").set_value(spec).run()
        assert not at.exception
        assert f"the model factory '{spec}' is not allowed here; allowed: '{tiny_factory}'" in at.sidebar.error[0].value
    assert not marker.exists() and "app_page_side_effect" not in sys.modules
    at.text_input(key="factory").set_value(tiny_factory).run()
    assert not at.error and f"Model **{tiny_factory}**" in at.caption[0].value


def test_app_loads_an_uploaded_torchscript_file_when_allowed(tiny_factory, tmp_path, monkeypatch) -> None:
    pytest.importorskip("streamlit", reason="the app needs the 'app' extra (streamlit)")
    from app_tiny_models import tiny_net

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(tiny_net()), buffer)
    at = _app(tmp_path, monkeypatch, "--unsafe-allow-torchscript", "--max-upload-mb", "1").run()
    at.radio(key="source").set_value("Upload weights").run()
    assert at.info[0].value == "Choose a model in the sidebar."
    at.file_uploader(key="upload").set_value(("tiny.pt", b"garbage", "application/octet-stream")).run()
    assert "holds a state dict; choose the architecture" in at.sidebar.error[0].value or \
        "not a weights file" in at.sidebar.error[0].value
    at.selectbox(key="architecture").set_value("efficientnet_lite0").run()
    assert "not a weights file" in at.sidebar.error[0].value
    at.file_uploader(key="upload").set_value(("big.pt", b"x" * (2 * 2**20), "application/octet-stream")).run()
    assert "over the limit of 1 MiB" in at.sidebar.error[0].value
    at.selectbox(key="architecture").set_value("(TorchScript: none)")
    at.file_uploader(key="upload").set_value(("tiny.pt", buffer.getvalue(), "application/octet-stream")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "upload:tiny.pt" in at.caption[0].value
    assert list(at.dataframe[0].value["layer"])[:3] == ["0", "1", "2"]


# ------------------------------------------------------------------------------- a real server, 127.0.0.1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            pytest.fail(f"the app did not start: {log.read_text()[-3000:]}")
        time.sleep(0.3)


def _listening_addresses(port: int) -> list:
    """The local addresses of the TCP sockets listening on ``port`` (Linux /proc/net/tcp, tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                address, port_hex = fields[1].split(":")
                if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                    raw = bytes.fromhex(address)
                    if len(raw) == 4:
                        found.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                    else:  # four little-endian 32-bit words
                        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                        found.append(socket.inet_ntop(socket.AF_INET6, words))
    return found


def _descendants(pid: int) -> set:
    children: dict = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class _Session:
    """A minimal Streamlit client: the websocket protocol the browser speaks, and the upload endpoint."""

    def __init__(self, port: int) -> None:
        from websockets.sync.client import connect

        self.base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(self.base + "/_stcore/health", timeout=10) as r:
            self.xsrf = http.cookies.SimpleCookie(r.headers["Set-Cookie"])["_streamlit_xsrf"].value
        self._connection = connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit", self.xsrf],
                                   additional_headers={"Cookie": f"_streamlit_xsrf={self.xsrf}", "Origin": self.base},
                                   max_size=None, open_timeout=30)
        self.ws = self._connection.__enter__()
        self.session_id = ""
        self.widgets: dict = {}

    def _receive(self, stop, timeout: float = 90):
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        messages, deadline = [], time.time() + timeout
        while True:
            msg = ForwardMsg()
            msg.ParseFromString(self.ws.recv(timeout=max(0.1, deadline - time.time())))
            messages.append(msg)
            kind = msg.WhichOneof("type")
            if kind == "new_session":
                self.session_id = msg.new_session.initialize.session_id
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                element = msg.delta.new_element
                inner = getattr(element, element.WhichOneof("type"))
                if getattr(inner, "id", ""):
                    self.widgets[inner.id.rsplit("-", 1)[-1]] = inner.id
            if stop(msg):
                return messages

    def run(self, **values) -> list:
        """Rerun the script with widget values (by key); returns the texts of the alerts it showed."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        msg.rerun_script.query_string = ""
        for key, value in values.items():
            state = msg.rerun_script.widget_states.widgets.add()
            state.id = self.widgets[key]
            if isinstance(value, str):
                state.string_value = value
            else:
                state.file_uploader_state_value.uploaded_file_info.append(value)
        self.ws.send(msg.SerializeToString())
        messages = self._receive(lambda m: m.WhichOneof("type") == "script_finished")
        alerts = []
        for m in messages:
            if m.WhichOneof("type") == "delta" and m.delta.WhichOneof("type") == "new_element":
                element = m.delta.new_element
                if element.WhichOneof("type") == "alert":
                    alerts.append(element.alert.body)
                elif element.WhichOneof("type") == "exception":
                    alerts.append(f"EXCEPTION {element.exception.message}")
        return alerts

    def upload(self, name: str, data: bytes):
        """Upload a file as the browser does; returns the file uploader's widget value."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.Common_pb2 import UploadedFileInfo

        request = BackMsg()
        request.file_urls_request.request_id = "1"
        request.file_urls_request.file_names.append(name)
        request.file_urls_request.session_id = self.session_id
        self.ws.send(request.SerializeToString())
        (reply,) = [m for m in self._receive(lambda m: m.WhichOneof("type") == "file_urls_response")
                    if m.WhichOneof("type") == "file_urls_response"]
        urls = reply.file_urls_response.file_urls[0]
        boundary = uuid.uuid4().hex
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        put = urllib.request.Request(self.base + urls.upload_url, data=body, method="PUT", headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}", "X-Xsrftoken": self.xsrf,
            "Cookie": f"_streamlit_xsrf={self.xsrf}"})
        with urllib.request.urlopen(put, timeout=30) as r:
            assert r.status in (200, 204)
        return UploadedFileInfo(name=name, size=len(data), file_id=urls.file_id, file_urls=urls)

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


def test_app_security_against_a_real_server(tmp_path) -> None:
    """Issue 14 items 1, 2, 4, 5 on `optim app` as an operator starts it: the listening socket is loopback; a
    TorchScript upload is refused and nothing in it runs; a ../ gallery folder is refused; SIGTERM stops it."""
    pytest.importorskip("streamlit", reason="the app needs the 'app' extra (streamlit)")
    pytest.importorskip("websockets", reason="the test speaks Streamlit's websocket protocol")
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("reads listening sockets from Linux's /proc")
    port, root, log = _free_port(), tmp_path / "root", tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "optim", "app", "--port", str(port), "--headless",
                                   "--data-dir", str(root), "--max-upload-mb", "1"], stdout=out,
                                  stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    session = None
    try:
        _wait_healthy(port, server, log)
        assert "serving http://127.0.0.1:%d to this machine only" % port in log.read_text()
        listening = _listening_addresses(port)
        assert listening and all(a in ("127.0.0.1", "::1") for a in listening), listening
        tree = _descendants(server.pid)
        assert len(tree) >= 2  # the launcher and the Streamlit server

        session = _Session(port)
        alerts = session.run()
        assert not [a for a in alerts if a.startswith("EXCEPTION")], alerts
        assert "source" in session.widgets and "factory" not in session.widgets
        session.run(source="Upload weights")
        marker = tmp_path / "marker.bin"
        upload = session.upload("evil.pt", _evil_torchscript(marker))
        alerts = session.run(source="Upload weights", upload=upload)
        refused = [a for a in alerts if "TorchScript archive and was refused" in a]
        assert refused and "--unsafe-allow-torchscript" in refused[0], alerts
        assert not marker.exists()  # nothing in the file ran: not at load, not for the layer table
        try:  # the upload limit, enforced by the server itself (it refuses on the Content-Length header)
            session.upload("big.pt", b"\0" * (2 * 2**20))
        except urllib.error.HTTPError as err:
            assert err.code == 413
        except (urllib.error.URLError, ConnectionError):
            pass  # refused before the client finished sending the body: the connection was closed on it
        else:
            pytest.fail("a 2 MiB upload was accepted by a server started with --max-upload-mb 1")
        alerts = session.run(data_dir="../escape")
        assert any("leaves the data root" in a for a in alerts), alerts
        assert not (tmp_path / "escape").exists() and not (tmp_path / "escape" / "index.sqlite").exists()
    finally:
        if session is not None:
            session.close()
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for pid in _descendants(server.pid):
                os.kill(pid, signal.SIGKILL)
            server.kill()
            raise
    assert code in (0, 128 + signal.SIGTERM), log.read_text()[-2000:]
    deadline = time.time() + 10
    while any(_alive(pid) for pid in tree) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in tree), "a child of `optim app` outlived SIGTERM"
    assert _listening_addresses(port) == []


# ------------------------------------------------------------------------------------ headless Chromium


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
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "optim", "app", "--port", str(port), "--headless", "--data-dir",
             str(tmp_path / "gallery")], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(tmp_path),
        )
    browser = None
    try:
        _wait_healthy(port, server, log, timeout=60)
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
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.float64)
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 1000
    assert pixels.std() > 10.0  # not a blank page
    # the rendered tile is on screen: many distinct colours, unlike the flat page background
    assert len(np.unique(pixels.reshape(-1, 3).astype(np.uint8), axis=0)) > 500
