"""Whole-model render jobs: in process, under torchrun with 2 processes, after a SIGKILL, and on 2 "nodes"."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import torch.nn as nn

from optim.images.export import save_png
from optim.jobs import _render_defaults, render_model
from optim.optimization.defaults import DEFAULT_LR, DEFAULT_SIZE
from optim.render import render_layer

sys.path.insert(0, str(Path(__file__).parent / "jobs"))
from tiny_job import tiny_model  # noqa: E402

SCRIPT = str(Path(__file__).parent / "jobs" / "tiny_job.py")
UNITS = [("0", c) for c in range(6)] + [("2", c) for c in range(5)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _torchrun(port: int, *args: str) -> list:
    """torchrun with c10d rendezvous on loopback (the elastic path: restarts re-rendezvous cleanly)."""
    rdzv = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"test{port}"]
    return [sys.executable, "-m", "torch.distributed.run", *rdzv, *args]


def _check_complete(out: Path) -> dict:
    index = json.loads((out / "index.json").read_text())
    assert [(u["layer"], u["channel"]) for u in index["units"]] == UNITS  # every unit once, in order
    pngs = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert pngs == sorted(f"{layer}/{c}.png" for layer, c in UNITS)
    assert not list(out.rglob(".*.tmp"))
    return index


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The job run in one plain process (the bytes every other run must match)."""
    out = tmp_path_factory.mktemp("one")
    subprocess.run([sys.executable, SCRIPT, str(out)], check=True, env=_env(), timeout=300, capture_output=True)
    _check_complete(out)
    return out


def _same_pngs(a: Path, b: Path) -> None:
    for layer, c in UNITS:
        assert (a / layer / f"{c}.png").read_bytes() == (b / layer / f"{c}.png").read_bytes(), (layer, c)


def test_in_process_job_resumes_and_refuses_other_settings(tmp_path):
    lines = []
    summary = render_model(tiny_model(), ["0", "2"], tmp_path, steps=3, size=16, batch_size=4, log=lines.append)
    assert summary["units"] == 11 and summary["rendered"] == 11 and summary["world_size"] == 1
    assert lines[0].startswith("[rank 0/1] 4/11 units,") and "channels/min" in lines[0]
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["run"]["steps"] == 3 and len(index["run"]["weights_sha256"]) == 16
    assert index["run"]["size"] == [16, 16] and index["run"]["lr"] == DEFAULT_LR and index["run"]["normalize"] is None
    raised = [u["objective_after"] > u["objective_before"] for u in index["units"]]
    assert sum(raised) >= 8  # the renders raised their channels (3 steps: most of them, 8 of 11)
    page = (tmp_path / "0" / "index.html").read_text()
    assert page.count("<img ") == 6 and 'src="3.png"' in page
    (tmp_path / "2" / "1.json").unlink()
    (tmp_path / "2" / ".1.png.x.tmp").write_bytes(b"half")  # what a worker killed mid-write leaves
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "2").glob("*.png")}
    said = []
    again = render_model(tiny_model(), ["0", "2"], tmp_path, steps=3, size=16, batch_size=4, log=said.append)
    assert again["rendered"] == 1 and again["skipped"] == 10
    assert said[-1].startswith("render-model: 11 units in 2 layers, 1 process, ")
    assert said[-1].endswith(" s: 1 rendered, 10 already done")
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "2").glob("*.png")}
    # the partial batch {0..3} was rendered again whole: channel 1 has its old bytes, the others were not rewritten
    assert after["1.png"][0] == before["1.png"][0]
    assert all(after[n] == before[n] for n in before if n != "1.png")
    assert not list(tmp_path.rglob(".*.tmp"))
    with pytest.raises(ValueError, match="holds a job with other settings \\(steps: 3 in the job, 4 now\\); use another "
                       "folder or the same settings to resume it$"):
        render_model(tiny_model(), ["0", "2"], tmp_path, steps=4, size=16, batch_size=4, log=None)
    # the default image's pieces and optimizer are part of the job: a job recorded with another squash is refused,
    # one written before they were recorded (same defaults, no such keys) resumes
    job = json.loads((tmp_path / "job.json").read_text())
    assert job["render_defaults"]["image"] == ["NaturalImage", "ToRGB", "AlgebraicSigmoid", "FFTImage"]
    assert job["render_defaults"]["optimizer"] == "AdamW"
    other = json.loads(json.dumps(job))
    other["render_defaults"]["image"][2] = "Sigmoid"
    (tmp_path / "job.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="other settings \\(render_defaults.image: "
                                         "\\['NaturalImage', 'ToRGB', 'Sigmoid', 'FFTImage'\\] in the job, "
                                         "\\['NaturalImage', 'ToRGB', 'AlgebraicSigmoid', 'FFTImage'\\] now\\)"):
        render_model(tiny_model(), ["0", "2"], tmp_path, steps=3, size=16, batch_size=4, log=None)
    older = json.loads(json.dumps(job))
    del older["render_defaults"]["image"], older["render_defaults"]["optimizer"]
    (tmp_path / "job.json").write_text(json.dumps(older))
    assert render_model(tiny_model(), ["0", "2"], tmp_path, steps=3, size=16, batch_size=4, log=None)["skipped"] == 11
    # iterate averaging: the window used is recorded, so the default written out resumes and another one is refused
    assert job["average"] == {"weights": "polynomial", "window": 1 / 6} and "average" not in job["render_defaults"]
    assert render_model(tiny_model(), ["0", "2"], tmp_path, steps=3, size=16, batch_size=4, log=None,
                        average=1 / 6)["skipped"] == 11
    with pytest.raises(ValueError, match="other settings \\(average.window: 0.1666+\\d* in the job, 0.0 now\\)"):
        render_model(tiny_model(), ["0", "2"], tmp_path, steps=3, size=16, batch_size=4, log=None, average=0)
    # jobs of older versions: a number was an exponential moving average's decay (0 and none: the last image)
    for recorded, resumes in ((0.0, True), (None, True), (0.9, False)):
        older = json.loads(json.dumps(job))
        older.pop("average")
        older["render_defaults"]["average"] = 0.0  # as the previous version repeated it
        if recorded is not None:
            older["average"] = recorded
        (tmp_path / "job.json").write_text(json.dumps(older))
        if resumes:  # with the same images: window 0
            assert render_model(tiny_model(), ["0", "2"], tmp_path, steps=3, size=16, batch_size=4, log=None,
                                average=0)["skipped"] == 11
        else:
            with pytest.raises(ValueError, match="average.decay: 0.9 in the job, not recorded now; average.weights: "
                               "'exponential' in the job, 'polynomial' now.*an exponential moving average's decay, as "
                               "optim before polynomial averaging recorded it: that version resumes the job\\)$"):
                render_model(tiny_model(), ["0", "2"], tmp_path, steps=3, size=16, batch_size=4, log=None)
    (tmp_path / "job.json").write_text(json.dumps(job))
    torch.manual_seed(5)
    state = torch.get_rng_state()
    _render_defaults()  # builds a default image aside: the caller's random stream is untouched
    assert torch.equal(torch.get_rng_state(), state)
    # bad arguments are refused before any work, naming the argument
    (tmp_path / "a_file").write_text("x")
    for kwargs, err, match in (
        ({"model_name": 3}, TypeError, "model_name must be a str or None, got 3"),
        ({"out": None}, TypeError, "out must be a folder path"),
        ({"out": tmp_path / "a_file"}, ValueError, "out must be a folder"),
        ({"average": 1}, ValueError, "average must be a fraction in \\[0, 0.5\\]: "),
    ):
        with pytest.raises(err, match=match):
            render_model(tiny_model(), ["0"], **{"out": tmp_path / "new", **kwargs}, steps=1, size=16, log=None)
    assert not (tmp_path / "new").exists()


def test_render_model_passes_the_callback_to_every_batch_and_keeps_the_bytes(tmp_path):
    calls = []
    render_model(tiny_model(), ["0", "2"], tmp_path / "a", steps=3, size=16, batch_size=4, log=None,
                 callback=lambda step, loss, images: calls.append((step, tuple(images.shape))))
    # 11 channels in batches of 4: (4, 2) of layer "0" and (4, 1) of layer "2", 3 steps each, steps from 0
    assert calls == [(s, (n, 3, 16, 16)) for n in (4, 2, 4, 1) for s in range(3)]
    render_model(tiny_model(), ["0", "2"], tmp_path / "b", steps=3, size=16, batch_size=4, log=None)
    for layer, c in UNITS:  # a callback only watches: same images, and the same job (it is not in its identity)
        assert (tmp_path / "a" / layer / f"{c}.png").read_bytes() == (tmp_path / "b" / layer / f"{c}.png").read_bytes()
    again = render_model(tiny_model(), ["0", "2"], tmp_path / "a", steps=3, size=16, batch_size=4, log=None)
    assert again["skipped"] == 11


class _Declared(nn.Sequential):
    """A model that declares its input as timm does: 24 px, normalized with mean 0.5 and std 0.25."""

    pretrained_cfg = {"input_size": (3, 24, 24), "mean": (0.5,) * 3, "std": (0.25,) * 3}


def test_size_none_renders_at_the_native_size_normalized_as_render_layer(tmp_path):
    torch.manual_seed(0)
    model = _Declared(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    out = tmp_path / "job"
    render_model(model, ["0"], out, steps=2, seed=0, log=None)  # size=None, lr=None: the model's and the defaults
    run = json.loads((out / "index.json").read_text())["run"]
    assert run["size"] == [24, 24] and run["lr"] == DEFAULT_LR
    assert run["normalize"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
    from PIL import Image

    assert all(Image.open(out / "0" / f"{c}.png").size == (24, 24) for c in range(4))
    # the reference path: render_layer resolves the same size and normalization
    tiles = render_layer(model, "0", channels=[0, 1, 2, 3], batch_size=4, steps=2, seed=0, progress=False)
    save_png(tiles[2], tmp_path / "ref.png")
    assert (out / "0" / "2.png").read_bytes() == (tmp_path / "ref.png").read_bytes()
    raw = render_layer(model, "0", channels=[0, 1, 2, 3], batch_size=4, steps=2, seed=0, progress=False,
                       preprocess=nn.Identity())  # without the normalization: another image
    save_png(raw[2], tmp_path / "raw.png")
    assert (out / "0" / "2.png").read_bytes() != (tmp_path / "raw.png").read_bytes()
    # the recorded objective is the channel's mean activation on the normalized image
    record = json.loads((out / "0" / "2.json").read_text())
    with torch.no_grad():
        expected = model[0]((tiles[2:3].as_subclass(torch.Tensor) - 0.5) / 0.25)[0, 2].mean().item()
    assert record["objective_after"] == pytest.approx(expected, rel=1e-5)
    # resuming compares resolved values: size=24 is the job's size, 16 is not
    assert render_model(model, ["0"], out, steps=2, size=24, seed=0, log=None)["rendered"] == 0
    with pytest.raises(ValueError, match=r"\(size: \[24, 24\] in the job, \[16, 16\] now\)"):
        render_model(model, ["0"], out, steps=2, size=16, seed=0, log=None)


class _Tokens(nn.Module):
    """(N, 3, 16, 16) -> (N, 5, 8): a class token and a 2 x 2 grid of 8 hidden units."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 8, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        return self.norm(torch.cat([x.mean(1, keepdim=True), x], dim=1))


class _Permute(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


@pytest.mark.parametrize("kind", ["tokens", "nhwc"])
def test_objectives_read_hidden_units_and_channels_last(kind, tmp_path):
    torch.manual_seed(0)
    if kind == "tokens":
        model, layer = nn.Sequential(_Tokens()).eval(), "0"
        units = 8  # hidden units, not the 5 tokens

        def objective(out, c):  # hidden unit c over the 2 x 2 patch tokens
            return out[0, 1:, c].mean().item()
    else:
        model, layer = nn.Sequential(nn.Conv2d(3, 4, 2, 2), _Permute(), nn.Linear(4, 6)).eval(), "2"
        units = 6  # (N, 8, 8, 6): the last dim, not the 8 rows

        def objective(out, c):
            return out[0, ..., c].mean().item()
    summary = render_model(model, [layer], tmp_path, steps=1, size=16, batch_size=units, log=None)
    assert summary["units"] == units
    index = json.loads((tmp_path / "index.json").read_text())
    assert [u["channel"] for u in index["units"]] == list(range(units))
    tiles = render_layer(model, layer, batch_size=units, steps=1, size=16, seed=0, progress=False)
    for c in (0, units - 1):
        record = json.loads((tmp_path / layer / f"{c}.json").read_text())
        with torch.no_grad():
            out = model[: int(layer) + 1](tiles[c : c + 1].as_subclass(torch.Tensor))
        assert record["objective_after"] == pytest.approx(objective(out, c), rel=1e-5)


def test_size_none_without_a_native_size_is_default_size_and_an_int_size_job_resumes(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 2, 3))
    render_model(net, ["0"], tmp_path / "a", steps=1, seed=0, log=None, progress=False)
    assert json.loads((tmp_path / "a" / "job.json").read_text())["size"] == [DEFAULT_SIZE, DEFAULT_SIZE]
    # a job.json written by an older version (an int size) resumes with the same square size
    render_model(net, ["0"], tmp_path / "b", steps=1, size=12, seed=0, log=None, progress=False)
    job = tmp_path / "b" / "job.json"
    job.write_text(json.dumps({**json.loads(job.read_text()), "size": 12}))
    assert render_model(net, ["0"], tmp_path / "b", steps=1, size=12, seed=0, log=None)["skipped"] == 2


def test_two_processes_give_the_same_bytes_as_one(reference, tmp_path):
    port = _free_port()
    run = subprocess.run(
        _torchrun(port, "--nnodes", "1", "--nproc_per_node", "2", SCRIPT, str(tmp_path)),
        env=_env(), timeout=300, capture_output=True, text=True, start_new_session=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    index = _check_complete(tmp_path)
    assert {u["rank"] for u in index["units"]} == {0, 1}
    assert "[rank 1/2]" in run.stdout and "render-model: 11 units in 2 layers, 2 processes" in run.stdout
    assert " s: 11 rendered, 0 already done" in run.stdout
    _same_pngs(reference, tmp_path)


def test_a_killed_worker_is_restarted_and_nothing_is_lost(reference, tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        # gloo's first connection after a restart is occasionally refused on a loaded machine (the rank fails
        # and torchrun restarts the group again), so the job may use more than one restart
        _torchrun(port, "--nnodes", "1", "--nproc_per_node", "2", "--max-restarts", "3", SCRIPT, str(tmp_path), "40"),
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        victim = None
        while time.time() < deadline and victim is None:
            done = [p for p in tmp_path.glob("*/*.json") if json.loads(p.read_text() or "{}").get("rank") == 1]
            pid_file = tmp_path / "pid.1"
            if done and pid_file.exists():
                victim = int(pid_file.read_text())
            time.sleep(0.05)
        assert victim is not None, "rank 1 never finished a unit"
        os.kill(victim, signal.SIGKILL)
        finished = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/*.png") if p.with_suffix(".json").exists()}
        written_before = len(finished)
        try:
            output, _ = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers (they hold the pipe)
            raise AssertionError("the job did not finish after the kill:\n" + proc.communicate()[0][-4000:])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output[-3000:]
    assert written_before < len(UNITS)  # killed mid-run
    _check_complete(tmp_path)
    # the restarted workers left the units finished before the kill alone
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    # the restarted workers found the finished units and left them alone
    assert "render-model: 11 units" in output
    ref40 = tmp_path.parent / "ref40"
    subprocess.run([sys.executable, SCRIPT, str(ref40), "40"], check=True, env=_env(), timeout=300,
                   capture_output=True)
    _same_pngs(ref40, tmp_path)


def test_a_worker_that_dies_before_the_job_starts_is_restarted_without_a_hang(reference, tmp_path):
    # rank 1 dies before render_model on its first start, after rank 0 entered it: the restarted ranks must
    # agree on one round (they waited for each other under two key prefixes for ever)
    port = _free_port()
    proc = subprocess.Popen(
        _torchrun(port, "--nnodes", "1", "--nproc_per_node", "2", "--max-restarts", "2", SCRIPT, str(tmp_path)),
        env={**_env(), "TINY_JOB_DIE_FIRST": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers
        raise AssertionError("the restarted job hung:\n" + proc.communicate()[0][-3000:])
    assert proc.returncode == 0, output[-2000:]
    _check_complete(tmp_path)
    _same_pngs(reference, tmp_path)


def test_two_nodes_on_loopback(reference, tmp_path):
    port = _free_port()
    procs = [
        subprocess.Popen(
            _torchrun(port, "--nnodes", "2", "--nproc_per_node", "1", SCRIPT, str(tmp_path)),
            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        for rank in (0, 1)
    ]
    try:
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    index = _check_complete(tmp_path)
    assert {u["rank"] for u in index["units"]} == {0, 1}
    _same_pngs(reference, tmp_path)


def test_a_refused_job_names_each_difference_briefly():
    from optim.jobs import _differences

    old = {"layers": [f"blocks.{i}" for i in range(60)], "render_defaults": {"scale": [0.9, 1.5]}}
    new = {"layers": ["blocks.1"], "normalize": None, "render_defaults": {"scale": [1.0, 1.5], "image": ["X"]}}
    lines = _differences(["layers", "normalize", "render_defaults"], old, new)
    assert lines[0].startswith("layers: ['blocks.0', 'blocks.1', ") and "... in the job, ['blocks.1'] now" in lines[0]
    assert len(lines[0]) < 160  # 60 layer names would be 700 characters
    assert lines[1] == "normalize: not recorded in the job, None now"  # an older job vs a recorded null
    assert lines[2:] == ["render_defaults.image: not recorded in the job, ['X'] now",
                         "render_defaults.scale: [0.9, 1.5] in the job, [1.0, 1.5] now"]
