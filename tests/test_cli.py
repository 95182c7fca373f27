"""The ``optim`` command line: argument errors, the layer table, channel and layer renders to PNG."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from optim.cli import app_command, main, parse_channels

TINY = textwrap.dedent(
    """
    import torch
    import torch.nn as nn

    def tiny_net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))

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


def test_parse_channels() -> None:
    assert parse_channels("0:4,10") == [0, 1, 2, 3, 10]
    assert parse_channels("3,1,3") == [1, 3]
    assert parse_channels("all", 3) == [0, 1, 2]
    assert parse_channels("2:", 5) == [2, 3, 4]
    with pytest.raises(ValueError, match="out of range"):
        parse_channels("0:9", 6)
    with pytest.raises(ValueError, match="'0:16'"):
        parse_channels("a-b")
    with pytest.raises(ValueError, match="empty"):
        parse_channels("4:2")


@pytest.mark.parametrize("command", [[], ["render"], ["layers"], ["layer"], ["models"], ["app"]])
def test_help_on_every_subcommand(command, capsys) -> None:
    assert main(command + ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: optim")
    if command == ["render"]:
        assert "--target" in out and "--steps" in out and "--seed" in out and "--output" in out


def test_python_dash_m_help() -> None:
    result = subprocess.run([sys.executable, "-m", "optim", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("render", "layers", "layer", "app"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["render", "cli_tiny_models:tiny_net"], "required: --target"),
        (["render", "cli_tiny_models:tiny_net", "-t", "0:1", "--steps", "0"], "positive integer"),
        (["render", "cli_tiny_models:tiny_net", "-t", "0:1", "--size", "big"], "positive integer"),
        (["render", "no_such_model", "-t", "x:1", "--steps", "1"], "unknown model 'no_such_model'"),
        (["render", "cli_tiny_models:missing", "-t", "0:1"], "has no attribute 'missing'"),
        (["render", "cli_tiny_models:NOT_CALLABLE", "-t", "0:1"], "not callable"),
        (["render", "cli_tiny_models:not_a_module", "-t", "0:1"], "not an nn.Module"),
        (["render", "no_such_module_xyz:f", "-t", "0:1"], "cannot import module"),
        (["render", "cli_tiny_models:tiny_net", "-t", "conv9:1", "--steps", "1", "-q"], "conv9"),
        (["render", "cli_tiny_models:tiny_net", "-t", "0:1:2", "--steps", "1", "-q"], "cannot parse objective"),
        (["render", "cli_tiny_models:tiny_net", "-t", "0:1", "-o", "out.jpg"], "must be a .png"),
        (["render", "cli_tiny_models:tiny_net", "-t", "0:1", "-o", "cli_tiny_models.py/out.png"], "cannot create"),
        (["layer", "cli_tiny_models:tiny_net", "2", "--channels", "0:9", "-q"], "out of range"),
        (["layers", "cli_tiny_models:tiny_net", "--weights", "missing.pt"], "no weights file"),
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


def test_layers_table(tiny_factory, capsys) -> None:
    assert main(["layers", tiny_factory, "--size", "8"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["layer", "type", "output", "shape", "channels"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["0"] == ["Conv2d", "1x4x8x8", "4"]
    assert rows["2"] == ["Conv2d", "1x6x8x8", "6"]
    assert rows["6"] == ["Linear", "1x5", "5"]
    assert list(rows) == ["0", "1", "2", "3", "4", "5", "6"]


def test_layers_of_the_zoo_model(capsys) -> None:
    assert main(["layers", "efficientnet_lite0", "--filter", "blocks.15.project"]) == 0
    out = capsys.readouterr().out
    assert "blocks.15.project.conv" in out and "1x320x7x7" in out


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
    common = ["-t", "2:1", "--size", "16", "--steps", "2", "-q"]
    assert main(["render", tiny_factory, *common, "-o", "a.png"]) == 0
    assert main(["render", tiny_factory, "--weights", "w.pt", *common, "-o", "b.png"]) == 0
    a, b = (np.asarray(Image.open(tmp_path / n)).astype(int) for n in ("a.png", "b.png"))
    assert np.abs(a - b).max() > 0
    torch.save({"bogus": torch.zeros(1)}, tmp_path / "bad.pt")
    assert main(["render", tiny_factory, "--weights", "bad.pt", *common]) == 2
    assert "do not fit" in _one_error_line(capsys)


def test_app_command(tmp_path) -> None:
    command = app_command(str(tmp_path), 8599, True, ["--", "--theme.base", "dark"])
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert command[4].endswith("streamlit_app.py")
    assert command[5:] == ["--server.port", "8599", "--server.headless", "true", "--theme.base", "dark", "--",
                           "--data-dir", str(tmp_path)]
