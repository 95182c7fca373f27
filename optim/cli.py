"""The ``optim`` command line (also ``python -m optim``): render channels, list layers, launch the app.

Subcommands::

    optim models                                   # the model registry
    optim layers efficientnet_lite0                # the layer table of a model
    optim render efficientnet_lite0 --target blocks.10:7 --steps 256 --output channel7.png
    optim layer efficientnet_lite0 blocks.10 --channels 0:16 --output blocks10.png
    optim app --data-dir ~/optim-gallery           # the Streamlit app (extra "app")

Every error is one line on stderr (``optim: error: ...``) with exit code 2; no traceback.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

__all__ = ["main", "build_parser", "parse_channels", "app_command", "CLIError"]


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def parse_channels(text: str, num_channels: Optional[int] = None) -> List[int]:
    """Parse a channel selection: ``"0:16"`` (a range), ``"3,5,9"``, ``"4"``, or ``"all"``.

    Args:
        text: the selection.
        num_channels: the layer's channel count (needed for ``"all"`` and an open range end).

    Returns:
        The sorted, de-duplicated channel indices.

    Raises:
        ValueError: malformed text, an empty selection, or channels outside the layer.

    Example::

        parse_channels("0:4,10")  # [0, 1, 2, 3, 10]
    """
    chosen: set = set()
    for part in (p.strip() for p in text.split(",")):
        if part == "all":
            if num_channels is None:
                raise ValueError("'all' channels needs the layer's channel count")
            chosen.update(range(num_channels))
        elif re.fullmatch(r"\d+", part):
            chosen.add(int(part))
        elif re.fullmatch(r"\d*:\d*", part):
            start_text, end_text = part.split(":")
            if not end_text and num_channels is None:
                raise ValueError(f"the open range {part!r} needs the layer's channel count")
            end = int(end_text) if end_text else num_channels
            chosen.update(range(int(start_text or 0), int(end)))  # type: ignore[arg-type]
        else:
            raise ValueError(f"channels look like '0:16', '3,5,9' or 'all', got {text!r}")
    if not chosen:
        raise ValueError(f"the channel selection {text!r} is empty")
    channels = sorted(chosen)
    if num_channels is not None and channels[-1] >= num_channels:
        raise ValueError(f"channel {channels[-1]} is out of range: the layer has {num_channels} channels")
    return channels


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse ``type`` that parses an int of at least ``minimum`` (``what`` names it in errors)."""

    def parse_int(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {value}")
        return value

    return parse_int


_positive_int = _int_at_least(1, "positive")
_nonneg_int = _int_at_least(0, "non-negative")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise (so ``main`` prints exactly one line) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{self.prog}: error: {message}")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registry name (see 'optim models') or a 'package.module:function' factory")
    p.add_argument("--weights", metavar="FILE", help="a state dict for the model, or a TorchScript file")
    p.add_argument(
        "--no-pretrained", dest="pretrained", action="store_false", help="registry models: random weights"
    )
    p.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cuda if available, else cpu)")


def _add_render_args(p: argparse.ArgumentParser, steps: int) -> None:
    p.add_argument("--size", type=_positive_int, default=None, help="image side in pixels (default 128)")
    p.add_argument("--steps", type=_positive_int, default=steps, help=f"optimization steps (default {steps})")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: render_vis's, 0.05)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``optim`` command (every subcommand has ``--help``)."""
    from . import __version__

    parser = _Parser(prog="optim", description="Feature visualization for PyTorch vision models.")
    parser.add_argument("--version", action="version", version=f"optim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("models", help="list the registered models", description="List the model registry.")

    p = sub.add_parser("layers", help="the layer table of a model", description="Print every layer that runs "
                       "in a forward pass with its type, output shape and channel count.")
    _add_model_args(p)
    p.add_argument("--size", type=_positive_int, default=None, help="input side (default: the model's)")
    p.add_argument("--filter", default=None, help="only layers whose name contains this text")

    p = sub.add_parser("render", help="render one channel to a PNG", description="Optimize an image that "
                       "excites one channel of one layer and write it as a PNG.")
    _add_model_args(p)
    p.add_argument("--target", "-t", required=True, help="'layer:channel' (e.g. blocks.10:7), 'layer:channel:x:y' (a neuron) or 'layer' (DeepDream)")
    p.add_argument("--output", "-o", default=None, help="PNG path (default: MODEL_TARGET.png)")
    _add_render_args(p, steps=256)

    p = sub.add_parser("layer", help="render many channels of a layer into a grid PNG", description="Render "
                       "the chosen channels of one layer in batches and write them as one grid PNG.")
    _add_model_args(p)
    p.add_argument("layer", help="dotted layer name (see 'optim layers MODEL')")
    p.add_argument("--channels", "-c", default="0:16", help="'0:16', '3,5,9' or 'all' (default 0:16)")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="channels per batch (default 8)")
    p.add_argument("--per-row", type=_positive_int, default=8, help="grid columns (default 8)")
    p.add_argument("--output", "-o", default=None, help="PNG path (default: MODEL_LAYER.png)")
    _add_render_args(p, steps=128)

    p = sub.add_parser("app", help="launch the Streamlit app", description="Launch the Streamlit app "
                       "(needs the 'app' extra). Extra arguments after '--' go to 'streamlit run'.")
    p.add_argument("--data-dir", default=None, help="gallery directory (default: $OPTIM_DATA_DIR or "
                   "~/.local/share/optim-gallery)")
    p.add_argument("--port", type=_positive_int, default=None, help="server port (default: Streamlit's)")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.add_argument("streamlit_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def _device(name: Optional[str]) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}: {err}") from None
    return name


def _load(args: argparse.Namespace):
    from .app.model_source import load_model

    return load_model(args.model, weights=args.weights, pretrained=args.pretrained, device=_device(args.device))


def _render_size(args: argparse.Namespace) -> int:
    from .render import DEFAULT_SIZE

    return args.size if args.size is not None else DEFAULT_SIZE


def _render_lr(args: argparse.Namespace) -> float:
    from .render import DEFAULT_LR

    return args.lr if args.lr is not None else DEFAULT_LR


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models, model_info

    for name in list_models():
        info = model_info(name)
        offline = "offline" if info.weights_offline else "download"
        print(f"{name:22s} {info.input_size[0]}x{info.input_size[1]}  {offline:8s}  {info.description}")
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    from .app.rendering import layer_table, native_input_size

    model = _load(args)
    rows = layer_table(model, args.size if args.size is not None else native_input_size(args.model))
    if args.filter:
        rows = [r for r in rows if args.filter in r.name]
    width = max([len(r.name) for r in rows] + [5])
    print(f"{'layer':{width}s}  {'type':18s}  {'output shape':18s}  channels")
    for r in rows:
        shape = "x".join(map(str, r.shape)) if r.shape else "-"
        print(f"{r.name:{width}s}  {r.type:18s}  {shape:18s}  {r.channels if r.channels is not None else '-'}")
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from .render import default_image, render_vis

    output = Path(args.output or f"{_slug(args.model)}_{_slug(args.target)}.png")
    _check_output(output)
    model = _load(args)
    (image,) = render_vis(
        model, args.target, image=default_image(_render_size(args)), thresholds=(args.steps,), lr=_render_lr(args),
        progress=not args.quiet, seed=args.seed,
    )
    _save(image[0], output)
    print(output)
    return 0


def _cmd_layer(args: argparse.Namespace) -> int:
    import torch

    from .app.rendering import RenderSettings, channel_count, render_channels
    from .images import make_grid_image

    settings = RenderSettings(size=_render_size(args), steps=args.steps, seed=args.seed, lr=_render_lr(args))
    output = Path(args.output or f"{_slug(args.model)}_{_slug(args.layer)}.png")
    _check_output(output)
    model = _load(args)
    channels = parse_channels(args.channels, channel_count(model, args.layer, settings.size))
    images = render_channels(
        model, args.layer, channels, settings, batch_size=args.batch_size, progress=not args.quiet
    )
    grid = make_grid_image(torch.stack([im.detach().cpu().float() for im in images]), images_per_row=args.per_row)
    _save(grid[0], output)
    print(output)
    return 0


def _check_output(output: Path) -> None:
    """Fail before a long render, not after it; the output's folder is created as needed."""
    if output.suffix.lower() != ".png":
        raise ValueError(f"the output must be a .png file, got {str(output)!r}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the output folder {str(output.parent)!r}: {err.strerror}") from None


def _save(image, output: Path) -> None:
    from .app.gallery import to_pil

    to_pil(image).save(output, format="PNG")


def app_command(data_dir: Optional[str], port: Optional[int], headless: bool, extra: Sequence[str]) -> List[str]:
    """The ``streamlit run`` command line that starts the app.

    Args:
        data_dir: the gallery directory (passed to the app after ``--``).
        port: the server port.
        headless: do not open a browser.
        extra: more ``streamlit run`` options.

    Returns:
        The argv list.
    """
    from .app import APP_SCRIPT

    command = [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT)]
    if port is not None:
        command += ["--server.port", str(port)]
    if headless:
        command += ["--server.headless", "true"]
    command += [a for a in extra if a != "--"]
    if data_dir:
        command += ["--", "--data-dir", str(data_dir)]
    return command


def _cmd_app(args: argparse.Namespace) -> int:
    from ._utils import optional_import

    optional_import("streamlit", "app", "the optim app")
    return subprocess.call(app_command(args.data_dir, args.port, args.headless, args.streamlit_args))


_COMMANDS = {
    "models": _cmd_models,
    "layers": _cmd_layers,
    "render": _cmd_render,
    "layer": _cmd_layer,
    "app": _cmd_app,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 for a bad argument or input (after one line on stderr).

    Example::

        optim.cli.main(["render", "efficientnet_lite0", "-t", "blocks.10:7", "--steps", "64"])
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return _COMMANDS[args.command](args)
    except SystemExit as exit_:  # --help / --version
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    except CLIError as err:
        print(f"{err}", file=sys.stderr)
    except (ValueError, TypeError, ImportError, OSError, KeyError, IndexError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"optim: error: {message}", file=sys.stderr)
    except KeyboardInterrupt:
        print("optim: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
