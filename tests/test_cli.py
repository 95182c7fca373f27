"""The ``optim`` command line: one-line errors with exit 2 for every user-caused failure, a quiet closed pipe,
``--class NAME``, atomic PNG writes, the layer table, channel and layer renders."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from optim.cli import MAX_SIZE, main
from optim.models.selection import class_index, parse_channels

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

ROOT = Path(__file__).resolve().parents[1]

TINY = textwrap.dedent(
    """
    import torch
    import torch.nn as nn

    def tiny_net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))

    def imagenet_net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 1000))

    def headless_net():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())

    NOT_CALLABLE = 3

    def not_a_module():
        return "model"
    """
)


@pytest.fixture
def tiny_factory(tmp_path, monkeypatch):
    """A ``module:factory`` path to a small conv net written to an importable file."""
    (tmp_path / "cli_tiny_models.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("cli_tiny_models", None)
    return "cli_tiny_models:tiny_net"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def test_parse_channels_and_class_names() -> None:
    assert parse_channels("0:4,10") == [0, 1, 2, 3, 10]
    assert parse_channels("3,1,3") == [1, 3]
    assert parse_channels("all", 3) == [0, 1, 2]
    assert parse_channels("2:", 5) == [2, 3, 4]
    range_error = r"^channel 6 is out of range for layer 'b', which has 6 channels \(valid: 0\.\.5\)$"
    with pytest.raises(ValueError, match=range_error):
        parse_channels("0:9", 6, layer="b")
    with pytest.raises(ValueError, match=r"^channel 3 is out of range for layer 'fc', which has 2 outputs "):
        parse_channels("3", 2, layer="fc", unit="outputs")
    with pytest.raises(ValueError, match="'0:16'"):
        parse_channels("a-b")
    with pytest.raises(ValueError, match="empty"):
        parse_channels("4:2")
    import optim.cli

    assert optim.cli.parse_channels is parse_channels  # the old name, now from the library
    assert class_index("Egyptian cat") == 285 and class_index("egyptian_cat") == 285 and class_index("967") == 967
    assert class_index("goldfish") == 1
    with pytest.raises(ValueError, match="unknown class name 'goldfsh'; close names: 'goldfish'"):
        class_index("goldfsh")
    with pytest.raises(ValueError, match="class index 1000 is out of range: the model has 1000 classes"):
        class_index("1000")


@pytest.mark.parametrize("command", [[], ["render"], ["layers"], ["layer"], ["models"], ["render-model"]])
def test_help_on_every_subcommand(command, capsys) -> None:
    assert main(command + ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: optim")
    if command == ["render"]:
        assert "--target" in out and "--class" in out and "--steps" in out and "--seed" in out and "--output" in out
    if command in (["render"], ["layer"], ["render-model"]):
        # the defaults are stated as values, read from the one place that sets them
        from optim.optimization import defaults

        flat = " ".join(out.split())
        assert f"else {defaults.DEFAULT_SIZE}; at most" in flat and f"(default {defaults.DEFAULT_STEPS})" in flat
        assert f"(default {defaults.DEFAULT_LR:g})" in flat and "(default 1/6; 0: the last step's image)" in flat
        assert "render_vis's" not in flat


def test_python_dash_m_help_and_the_app_launcher_help() -> None:
    result = subprocess.run([sys.executable, "-m", "optim", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("render", "layers", "layer", "render-model", "app"):
        assert command in result.stdout
    result = subprocess.run([sys.executable, "-m", "optim", "app", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("usage: optim app")
    for flag in ("--address", "--data-dir", "--max-upload-mb", "--unsafe-allow-torchscript", "--unsafe-allow-factory"):
        assert flag in result.stdout
    # the launcher's own argument errors come back as its one line and exit 2
    result = subprocess.run([sys.executable, "-m", "optim", "app", "--port", "0"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stderr.strip() == "optim app: error: argument --port: --port must be " \
        "1..65535, got 0"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["render", "cli_tiny_models:tiny_net"], "one of the arguments --target/-t --class is required"),
        (["render", "cli_tiny_models:tiny_net", "-t", "0:1", "--class", "goldfish"], "not allowed with argument"),
        (["render", "cli_tiny_models:tiny_net", "-t", "0:1", "--steps", "0"], "positive integer"),
        (["render", "cli_tiny_models:tiny_net", "-t", "0:1", "--size", "big"], "positive integer"),
        (["render", "no_such_model", "-t", "x:1", "--steps", "1"], "unknown model 'no_such_model'"),
        (["render", "efficientnet_lite", "-t", "x:1", "--steps", "1"], "; did you mean 'efficientnet_lite"),
        (["render", "cli_tiny_models:missing", "-t", "0:1"], "has no attribute 'missing'"),
        (["render", "cli_tiny_models:NOT_CALLABLE", "-t", "0:1"], "not callable"),
        (["render", "cli_tiny_models:not_a_module", "-t", "0:1"], "not an nn.Module"),
        (["render", "no_such_module_xyz:f", "-t", "0:1"], "cannot import module"),
        (["render", "cli_tiny_models:tiny_net", "-t", "conv9:1", "--steps", "1", "-q"], "conv9"),
        (["render", "cli_tiny_models:tiny_net", "-t", "0:1:2", "--steps", "1", "-q"], "cannot parse objective"),
        (["render", "cli_tiny_models:tiny_net", "-t", "0:1", "-o", "out.jpg"], "must be a .png"),
        (["render", "cli_tiny_models:tiny_net", "-t", "0:1", "-o", "cli_tiny_models.py/out.png"], "cannot create"),
        (["layer", "cli_tiny_models:tiny_net", "2", "--channels", "0:9", "-q"], "out of range"),
        (["render", "cli_tiny_models:tiny_net", "-t", "0:1", "--lr", "nan"], "--lr: expected a finite number >= 0"),
        (["render", "cli_tiny_models:tiny_net", "-t", "0:1", "--average", "1"],
         "expected a fraction of the steps in [0, 0.5] (0.25, 1/6), got '1'"),
        (["render", "cli_tiny_models:tiny_net", "-t", "0:1", "--average", "1/0"], "got '1/0'"),
        (["layers", "cli_tiny_models:tiny_net", "--weights", "missing.pt"], "no weights file at 'missing.pt'"),
        (["render-model", "cli_tiny_models:tiny_net", "--out", "job"], "the following arguments are required: "
         "--layers/-l"),
        (["render-model", "cli_tiny_models:tiny_net", "-l", "0", "--out", "job", "--lr", "-1"], "finite number >= 0"),
        (["render-model", "cli_tiny_models:tiny_net", "-l", "0", "conv9", "--out", "job", "--steps", "1"], "conv9"),
        (["render-model", "cli_tiny_models:tiny_net", "-l", "0", "--out", "cli_tiny_models.py"], "is a file"),
        (["render-model", "cli_tiny_models:tiny_net", "-l", "0", "--out", "."], "holds no render job (no job.json)"),
        (["frobnicate"], "invalid choice"),
        ([], "usage"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(tiny_factory, capsys, argv, message) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if argv:
        assert len(err.strip().splitlines()) == 1, err
    assert message in err


# ------------------------------------------------------------------------- issue 14 item 13: user failures


def test_device_that_is_not_there(tiny_factory, capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["render", tiny_factory, "-t", "0:1", "--steps", "1", "-q", "--device", "cuda"]) == 2
    err = _one_error_line(capsys)
    assert "device 'cuda' is not available" in err and "torch.cuda.is_available() is False" in err
    assert "use 'cpu'" in err
    assert not list(Path().glob("*.png"))  # failed before rendering anything
    assert main(["layers", tiny_factory, "--device", "tpu7"]) == 2
    assert "unknown device 'tpu7'" in _one_error_line(capsys)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["layers", tiny_factory, "--device", "cuda:3"]) == 2
    assert "device 'cuda:3' is not available: this machine has 1 CUDA device(s), cuda:0 to cuda:0" in \
        _one_error_line(capsys)


def test_corrupt_weights_files(tiny_factory, tmp_path, capsys) -> None:
    from cli_tiny_models import tiny_net

    torch.save(tiny_net().state_dict(), tmp_path / "good.pt")
    good = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"\x00\x01 not a checkpoint" * 50)
    with zipfile.ZipFile(tmp_path / "broken.ts", "w") as archive:  # looks like TorchScript, is not loadable
        archive.writestr("model/code/__torch__.py", "this is not TorchScript")
        archive.writestr("model/data.pkl", b"\x80\x05garbage")
    expected = {"truncated.pt": "is not a weights file", "garbage.pt": "is not a weights file",
                "broken.ts": "is not a loadable TorchScript file"}
    for model in (tiny_factory, "efficientnet_lite0"):
        for name, message in expected.items():
            assert main(["layers", model, "--weights", name]) == 2, (model, name)
            err = _one_error_line(capsys)
            assert message in err and f"'{name}'" in err, err
    torch.save({"bogus": torch.zeros(1)}, tmp_path / "other.pt")
    assert main(["layers", "efficientnet_lite0", "--weights", "other.pt"]) == 2
    assert "do not fit" in _one_error_line(capsys)


def test_huge_size_is_refused_before_anything_is_allocated(tiny_factory, capsys) -> None:
    for argv in (["render", tiny_factory, "-t", "0:1", "--size", "100000"], ["layers", tiny_factory, "--size", "30000"],
                 ["layer", tiny_factory, "0", "--size", str(MAX_SIZE + 1)]):
        assert main(argv) == 2
        err = _one_error_line(capsys)
        assert f"expected at most {MAX_SIZE}" in err and "--size" in err


def test_offline_download_names_the_url_and_the_weights_alternative(tmp_path, capsys, monkeypatch) -> None:
    import optim.models as models

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.chdir(tmp_path)
    assert main(["render", "googlenet", "-t", "mixed4a:0", "--steps", "1", "-q"]) == 2
    err = _one_error_line(capsys)
    assert models.INCEPTION5H_URL in err and "Name or service not known" in err
    assert "--weights FILE" in err and "--no-pretrained" in err
    # a factory called directly says the same, as an OSError carrying the URL
    with pytest.raises(models.WeightsDownloadError, match="model_path=FILE for a factory") as info:
        models.googlenet(pretrained=True)
    assert info.value.url == models.INCEPTION5H_URL and info.value.model is None
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    # the alternative works offline: the published file's architecture, loaded from disk
    pretrained_config = dict(transform_input=True, bgr_transform=False, replace_relus_with_redirectedrelu=True,
                             use_linear_modules_only=False, aux_logits=False, out_features=1008)
    torch.save(models.InceptionV1(**pretrained_config).state_dict(), tmp_path / "inception5h.pth")
    assert main(["layers", "googlenet", "--weights", "inception5h.pth", "--filter", "mixed5b", "--size", "64"]) == 0
    assert "mixed5b" in capsys.readouterr().out


def test_closed_pipe_is_quiet(tiny_factory, tmp_path) -> None:
    """`optim layers ... | head`: the reader closes the pipe; no "Broken pipe", exit 0."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "optim", "layers", tiny_factory, "--size", "8"], cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and err == ""


def test_class_visualization_by_name(tiny_factory, tmp_path, capsys) -> None:
    import optim as opt
    from cli_tiny_models import imagenet_net
    from optim.loss import ChannelActivation

    factory = "cli_tiny_models:imagenet_net"  # 1000 outputs: ImageNet's class names apply
    argv = ["render", factory, "--class", "goldfish", "--size", "16", "--steps", "3", "--seed", "2", "-q"]
    assert main(argv) == 0
    out = Path(capsys.readouterr().out.strip())
    assert out == Path("cli_tiny_models_imagenet_net_class_goldfish.png") and out.is_file()
    model = imagenet_net().eval()
    (expected,) = opt.render_vis(model, ChannelActivation(model, 1), image=opt.render.default_image(16),
                                 thresholds=(3,), progress=False, seed=2)
    reference = (expected[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    assert np.abs(np.asarray(Image.open(out)).astype(int) - reference.astype(int)).max() <= 1
    assert main(["render", factory, "--class", "goldfsh", "-q"]) == 2
    assert "unknown class name 'goldfsh'; close names: 'goldfish'" in _one_error_line(capsys)
    # five outputs: ImageNet's names are not this model's, so a name is refused and an index is taken as given
    assert main(["render", tiny_factory, "--class", "Egyptian cat", "--size", "8", "--steps", "1", "-q"]) == 2
    assert _one_error_line(capsys).endswith("the output of Sequential has 5 classes, not num_classes=1000 (the "
                                            "number of class names the class was read from): the names are not this "
                                            "model's classes; give the class by its index (or, in Python, the model's "
                                            "own names: labels=)")
    assert main(["render", tiny_factory, "--class", "4", "--size", "8", "--steps", "1", "-q"]) == 0
    assert capsys.readouterr().out.strip() == "cli_tiny_models_tiny_net_class_4.png"
    assert main(["render", tiny_factory, "--class", "5", "--size", "8", "--steps", "1", "-q"]) == 2
    assert _one_error_line(capsys).endswith("class_index 5 is out of range: the output of Sequential has 5 classes "
                                            "(valid: 0..4)")
    # a network without a classification head: a feature-map channel is not rendered under the class's name
    assert main(["render", "cli_tiny_models:headless_net", "--class", "3", "--size", "8", "-q"]) == 2
    assert _one_error_line(capsys).endswith("ClassLogit needs class logits, a [batch, classes] output, but the "
                                            "output of Sequential has shape (1, 4, 8, 8): a network without a "
                                            "classification head, or logits that are not its first output; read "
                                            "the module that outputs the logits instead (target=)")
    assert not Path("cli_tiny_models_headless_net_class_3.png").exists()
    assert main(["render", tiny_factory, "--class", "-1", "--size", "8", "--steps", "1", "-q"]) == 2
    assert _one_error_line(capsys).endswith("class_index must be >= 0, got -1")
    assert main(["render", "efficientnet_lite0", "--class", "-1", "-q"]) == 2  # refused before the model loads
    assert _one_error_line(capsys).endswith("class indices must be >= 0, got -1")


def test_output_writes_are_atomic(tiny_factory, tmp_path, capsys, monkeypatch) -> None:
    import optim.images.export as export

    out = tmp_path / "out.png"
    out.write_bytes(b"the previous render")

    def failing(pil, handle, metadata):
        handle.write(b"\x89PNG half of a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "_write_png", failing)
    assert main(["render", tiny_factory, "-t", "2:1", "--size", "16", "--steps", "1", "-q", "-o", str(out)]) == 2
    assert "No space left on device" in _one_error_line(capsys)
    assert out.read_bytes() == b"the previous render"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp") or "out.png." in p.name) == []
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert main(["render", tiny_factory, "-t", "2:1", "--size", "16", "--steps", "1", "-q", "-o", str(out)]) == 0
    assert np.asarray(Image.open(out)).shape == (16, 16, 3)


def test_interrupt_while_rendering_exits_130(tiny_factory, capsys, monkeypatch) -> None:
    import optim.render as render

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(render, "render_vis", interrupted)
    assert main(["render", tiny_factory, "-t", "0:1", "-q"]) == 130
    assert capsys.readouterr().err.strip() == "optim: interrupted"


# -------------------------------------------------------------------------------------------- the commands


def test_layers_table(tiny_factory, capsys) -> None:
    assert main(["layers", tiny_factory, "--size", "8"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["layer", "type", "output", "shape", "channels"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["0"] == ["Conv2d", "1x4x8x8", "4"]
    assert rows["2"] == ["Conv2d", "1x6x8x8", "6"]
    assert rows["6"] == ["Linear", "1x5", "5"]
    assert list(rows) == ["0", "1", "2", "3", "4", "5", "6"]


def test_console_script_imports_a_factory_from_the_working_directory(tmp_path, monkeypatch, capsys) -> None:
    # the `optim` console script's sys.path starts with its bin folder, not the working directory (python -m's)
    (tmp_path / "cwd_models.py").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path), os.getcwd())])
    sys.modules.pop("cwd_models", None)
    assert main(["layers", "cwd_models:tiny_net", "--size", "8"]) == 0
    assert "1x6x8x8" in capsys.readouterr().out
    assert str(tmp_path) not in sys.path  # put back as it was


def test_layers_of_the_zoo_model(capsys) -> None:
    assert main(["layers", "efficientnet_lite0", "--filter", "blocks.15.project"]) == 0
    out = capsys.readouterr().out
    assert "blocks.15.project.conv" in out and "1x320x5x5" in out  # at the size a render uses (160 px)


def test_render_writes_the_png_of_render_vis(tiny_factory, tmp_path, capsys) -> None:
    out = tmp_path / "new" / "folder" / "channel.png"  # folders are created
    argv = ["render", tiny_factory, "-t", "2:3", "--size", "24", "--steps", "3", "--seed", "5", "-o", str(out)]
    assert main(argv + ["-q"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    saved = np.asarray(Image.open(out))
    assert saved.shape == (24, 24, 3) and saved.dtype == np.uint8

    import optim as opt
    from cli_tiny_models import tiny_net

    (expected,) = opt.render_vis(tiny_net().eval(), "2:3", image=opt.render.default_image(24), thresholds=(3,),
                                 progress=False, seed=5)
    reference = (expected[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    assert np.abs(saved.astype(int) - reference.astype(int)).max() <= 1
    assert saved.std() > 1.0  # an image, not a flat fill
    # --average 1/2: the average of about the last half of the steps, as render_vis(average=0.5) gives it
    assert main(argv + ["--average", "1/2", "-q"]) == 0
    (averaged,) = opt.render_vis(tiny_net().eval(), "2:3", image=opt.render.default_image(24), thresholds=(3,),
                                 progress=False, seed=5, average=0.5)
    reference = (averaged[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    assert np.abs(np.asarray(Image.open(out)).astype(int) - reference.astype(int)).max() <= 1
    assert not np.array_equal(np.asarray(Image.open(out)), saved)  # not the default (1/6) average


def test_render_progress_bar_goes_to_stderr(tiny_factory, tmp_path, capsys) -> None:
    assert main(["render", tiny_factory, "-t", "0:0", "--size", "16", "--steps", "2", "-o", "p.png"]) == 0
    assert "2/2" in capsys.readouterr().err


def test_layer_grid(tiny_factory, tmp_path, capsys) -> None:
    out = tmp_path / "grid.png"
    argv = ["layer", tiny_factory, "2", "--channels", "0:5", "--batch-size", "2", "--per-row", "3",
            "--size", "16", "--steps", "2", "-q", "-o", str(out)]
    assert main(argv) == 0
    grid = np.asarray(Image.open(out))
    # 5 tiles of 16 px, 3 per row, 2 px padding: 2 rows x 3 columns
    assert grid.shape == (2 * 18 + 2, 3 * 18 + 2, 3)
    assert (grid[:2] == 0).all() and (grid[:, :2] == 0).all()  # the padding
    assert (grid[20:36, 38:54] == 0).all()  # the sixth cell is empty
    assert grid[2:18, 2:18].std() > 1.0


def test_weights_file_changes_the_render(tiny_factory, tmp_path, capsys) -> None:
    from cli_tiny_models import tiny_net

    model = tiny_net()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-1.0)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    common = ["-t", "2:1", "--size", "32", "--steps", "3", "-q"]
    assert main(["render", tiny_factory, *common, "-o", "a.png"]) == 0
    assert main(["render", tiny_factory, "--weights", "w.pt", *common, "-o", "b.png"]) == 0
    a, b = (np.asarray(Image.open(tmp_path / n)).astype(int) for n in ("a.png", "b.png"))
    assert np.abs(a - b).max() > 0
    # a TorchScript file of the user's own is theirs to trust on the command line
    torch.jit.save(torch.jit.script(model), tmp_path / "w.ts")
    assert main(["render", tiny_factory, "--weights", "w.ts", *common, "-o", "c.png"]) == 0
    torch.save({"bogus": torch.zeros(1)}, tmp_path / "bad.pt")
    assert main(["render", tiny_factory, "--weights", "bad.pt", *common]) == 2
    assert "do not fit" in _one_error_line(capsys)


def test_cli_and_app_do_not_import_each_other() -> None:
    """Issue 11: model loading and image conversion are the library's; the CLI reaches the app only as a process
    (``python -m optim.app``), and the app never imports the CLI."""
    import ast

    def imported(path: Path) -> set:
        names = set()
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                names.update([module] + [f"{module}.{alias.name}" for alias in node.names])
        return names

    cli = imported(ROOT / "optim" / "cli.py")
    assert not [n for n in cli if n == "optim.app" or n.startswith("optim.app.")], cli
    for path in sorted((ROOT / "optim" / "app").glob("*.py")):
        names = imported(path)
        assert not [n for n in names if n == "optim.cli" or n.startswith("optim.cli.")], (path.name, names)
    result = subprocess.run([sys.executable, "-c", "import sys, optim.cli; print(sorted(m for m in sys.modules "
                             "if m.startswith('optim.app')))"], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------------- issue 16: render-model


JOBS = ROOT / "tests" / "jobs"
JOB_ARGS = ["tiny_job:tiny_model", "--layers", "0", "2", "--steps", "8", "--size", "16", "--batch-size", "2",
            "--device", "cpu"]
JOB_UNITS = [("0", c) for c in range(6)] + [("2", c) for c in range(5)]


def _job_env() -> dict:
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(JOBS), str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def test_job_device_is_cuda_local_rank_under_torchrun(monkeypatch) -> None:
    from optim.cli import job_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert job_device("cuda", {"LOCAL_RANK": "1"}) == torch.device("cuda", 1)
    assert job_device(None, {"LOCAL_RANK": "0"}) == torch.device("cuda", 0)  # the default is CUDA when available
    assert job_device("cuda", {}) == torch.device("cuda")  # a plain run: torch's current device
    assert job_device("cuda:0", {"LOCAL_RANK": "1"}) == torch.device("cuda", 0)  # an explicit index is kept
    assert job_device("cpu", {"LOCAL_RANK": "1"}) == torch.device("cpu")
    with pytest.raises(ValueError, match="LOCAL_RANK 2, but this machine has 2 CUDA device\\(s\\): start at most 2 "
                       "processes per node with --device cuda \\(--nproc_per_node 2\\)"):
        job_device("cuda", {"LOCAL_RANK": "2"})


def _check_job(out: Path, model: str) -> dict:
    import json

    index = json.loads((out / "index.json").read_text())
    assert [(u["layer"], u["channel"]) for u in index["units"]] == JOB_UNITS
    run = index["run"]
    assert (run["model"], run["layers"], run["steps"], run["size"], run["batch_size"], run["seed"]) == \
        (model, ["0", "2"], 8, [16, 16], 2, 0)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == sorted(f"{l}/{c}.png" for l, c in JOB_UNITS)
    assert (out / "0" / "index.html").read_text().count("<img ") == 6
    return index


def test_render_model_one_process_resume_and_torchrun_two_processes_same_bytes(tmp_path, monkeypatch, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    result = subprocess.run([sys.executable, "-m", "optim", "render-model", *JOB_ARGS, "--out", str(one)],
                            env=_job_env(), cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rank 0/1] 2/11 units," in result.stdout and "channels/min" in result.stdout
    assert "render-model: 11 units in 2 layers, 1 process," in result.stdout
    _check_job(one, "tiny_job:tiny_model")
    # the same command again (in process) renders nothing: every unit is found done
    monkeypatch.syspath_prepend(str(JOBS))
    stamps = {p: p.stat().st_mtime_ns for p in one.rglob("*.png")}
    assert main(["render-model", *JOB_ARGS, "--out", str(one)]) == 0
    out = capsys.readouterr().out
    assert "[rank" not in out and "render-model: 11 units" in out
    assert {p: p.stat().st_mtime_ns for p in one.rglob("*.png")} == stamps
    # two processes under torchrun (c10d rendezvous on loopback), the same command after "-m optim"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--rdzv-backend", "c10d", "--rdzv-endpoint",
               f"127.0.0.1:{port}", "--rdzv-id", f"cli{port}", "--nnodes", "1", "--nproc_per_node", "2",
               "-m", "optim", "render-model", *JOB_ARGS, "--out", str(two)]
    proc = subprocess.Popen(command, env=_job_env(), cwd=str(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers
    assert proc.returncode == 0, output[-3000:]
    assert "[rank 1/2]" in output and "render-model: 11 units in 2 layers, 2 processes" in output
    index = _check_job(two, "tiny_job:tiny_model")
    assert {u["rank"] for u in index["units"]} == {0, 1}
    for layer, c in JOB_UNITS:
        assert (one / layer / f"{c}.png").read_bytes() == (two / layer / f"{c}.png").read_bytes(), (layer, c)


def test_a_render_that_turns_nan_is_one_error_line_and_no_png(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.syspath_prepend(str(JOBS))
    out = tmp_path / "nan.png"
    code = main(["render", "tiny_job:nan_model", "--target", "1:0", "--steps", "2", "--size", "16",
                 "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    errors = [line for line in err.splitlines() if line.startswith("optim: error:")]
    assert errors == [line for line in err.splitlines() if "Traceback" in line or line.startswith("optim:")]
    assert len(errors) == 1 and "the loss became nan at step 0" in errors[0] and "model that outputs NaN" in errors[0]


def test_models_lists_the_trained_size_and_the_size_a_render_uses(capsys) -> None:
    import torch.nn as nn

    from optim.models.registry import _REGISTRY, register_model
    from optim.optimization.defaults import DEFAULT_SIZE

    class Declared(nn.Sequential):  # declares its input as timm does: a render uses that size
        pretrained_cfg = {"input_size": (3, 48, 40)}

    @register_model("cli_declared_net", input_size=64, description="declares 48x40")
    def declared(pretrained=False, *, progress=True, model_path=None, num_classes=10):
        return Declared(nn.Conv2d(3, num_classes, 3))

    @register_model("cli_broken_net", input_size=32)
    def broken(pretrained=False, *, progress=True, model_path=None, num_classes=10):
        raise ImportError("needs an extra that is not installed")

    try:
        assert main(["models"]) == 0
    finally:
        _REGISTRY.pop("cli_declared_net"), _REGISTRY.pop("cli_broken_net")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "trained", "renders", "weights"]
    rows = {line.split()[0]: line.split()[1:3] for line in lines[1:lines.index("")]}
    assert lines[-1].startswith("trained: the input size of the published weights; renders: the size a render uses")
    default = f"{DEFAULT_SIZE}x{DEFAULT_SIZE}"  # the zoo's models declare no size: render_vis's default
    assert rows["efficientnet_lite0"] == ["224x224", default] and rows["efficientnet_lite2"] == ["260x260", default]
    assert rows["cli_declared_net"] == ["64x64", "48x40"] and rows["cli_broken_net"] == ["32x32", "?"]
