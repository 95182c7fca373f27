"""The ``optim`` command line (also ``python -m optim``): render channels, list layers, launch the app.

Subcommands::

    optim models                                   # the model registry
    optim layers efficientnet_lite0                # the layer table of a model
    optim render efficientnet_lite0 --target blocks.10:7 --steps 256 --output channel7.png
    optim render efficientnet_lite0 --class "Egyptian cat" --output cat.png
    optim layer efficientnet_lite0 blocks.10 --channels 0:16 --output blocks10.png
    optim render-model efficientnet_lite0 --layers blocks.4 blocks.8 --out lite0-run   # every channel
    torchrun --nproc_per_node 4 -m optim render-model efficientnet_lite0 --layers blocks.8 --out lite0-run
    optim app --data-dir ~/optim-gallery           # the Streamlit app (extra "app"; see optim app --help)

Every user-caused failure (a bad argument, a missing device, a damaged or unfitting weights file, an image size
over the limit, a download that fails offline, ...) is one line on stderr (``optim: error: ...``) with exit code
2, no traceback (set ``OPTIM_TRACEBACK=1`` to see one). A reader that closes the pipe early (``optim layers ... |
head``) ends the command quietly with exit code 0. PNG outputs are written atomically: an interrupted run
leaves the previous file, never half a file.

Model loading and image conversion come from the library (:mod:`optim.models.loading`,
:mod:`optim.models.selection`, :mod:`optim.images.export`); the ``app`` subcommand hands its arguments to the
app's launcher (``python -m optim.app``) in a child process that stops when this one is told to stop.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Tuple

__all__ = ["main", "build_parser", "job_device", "CLIError", "MAX_SIZE"]

#: The largest image side ``--size`` accepts (checked before anything is allocated).
MAX_SIZE = 4096


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def __getattr__(name: str) -> Any:
    # parse_channels moved to the library (optim.models.selection); the old name keeps working
    if name == "parse_channels":
        from .models.selection import parse_channels

        return parse_channels
    raise AttributeError(f"module 'optim.cli' has no attribute {name!r}")


def _int_at_least(minimum: int, what: str, maximum: Optional[int] = None) -> Callable[[str], int]:
    """An argparse ``type`` that parses an int in ``minimum..maximum`` (``what`` names it in errors)."""

    def parse_int(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(
                f"expected at most {maximum}, got {value} (a {value} x {value} image would need about "
                f"{value * value * 3 * 4 * 8 / 2**30:.0f} GiB during a render)"
            )
        return value

    return parse_int


_positive_int = _int_at_least(1, "positive")
_nonneg_int = _int_at_least(0, "non-negative")
_size = _int_at_least(1, "positive", MAX_SIZE)


def _lr(text: str) -> float:
    """An argparse ``type`` for a learning rate (``check_lr``'s rule: a finite number >= 0)."""
    from .optimization.defaults import check_lr

    try:
        return check_lr(float(text))
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}") from None


def _average(text: str) -> float:
    """An argparse ``type`` for an iterate-averaging window: a fraction such as ``0.25`` or ``1/6``
    (``check_average``'s rule)."""
    from .optimization.averaging import MAX_AVERAGE, check_average

    try:
        top, _, bottom = text.partition("/")
        return float(check_average(float(top) / float(bottom) if bottom else float(top)))  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a fraction of the steps in [0, {MAX_AVERAGE}] (0.25, 1/6), "
                                         f"got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise (so ``main`` prints exactly one line) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{self.prog}: error: {message}")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registry name (see 'optim models') or a 'package.module:function' factory")
    p.add_argument("--weights", metavar="FILE", help="a state dict for the model (for a registry model, a file "
                   "such as its published weights), or a TorchScript file you trust")
    p.add_argument(
        "--no-pretrained", dest="pretrained", action="store_false", help="registry models: random weights"
    )
    p.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cuda if available, else cpu)")


def _add_render_args(p: argparse.ArgumentParser, quiet_help: str = "no progress bar") -> None:
    from .optimization.defaults import DEFAULT_AVERAGE, DEFAULT_LR, DEFAULT_LR_DECAY_STEPS, DEFAULT_SIZE, DEFAULT_STEPS

    p.add_argument("--size", type=_size, default=None,
                   help=f"image side in pixels (default: the size the model's config declares (timm, Hugging Face, "
                        f"torchvision ViT), else {DEFAULT_SIZE}; at most {MAX_SIZE})")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help=f"optimization steps (default {DEFAULT_STEPS})")
    p.add_argument("--lr", type=_lr, default=None,
                   help=f"learning rate at the first step, decaying as lr / sqrt(1 + step / "
                        f"{DEFAULT_LR_DECAY_STEPS:g}) (default {DEFAULT_LR:g})")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    p.add_argument("--average", type=_average, default=None, metavar="FRACTION",
                   help="iterate averaging: the image written is an average of the steps' images weighted towards this "
                        f"last fraction of them (default {Fraction(DEFAULT_AVERAGE).limit_denominator(100)}; 0: the "
                        "last step's image)")
    p.add_argument("--quiet", "-q", action="store_true", help=quiet_help)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``optim`` command (every subcommand has ``--help``)."""
    from . import __version__
    from .optimization.defaults import DEFAULT_SIZE

    parser = _Parser(prog="optim", description="Feature visualization for PyTorch vision models.")
    parser.add_argument("--version", action="version", version=f"optim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("models", help="list the registered models", description="List the model registry: name, the "
                   "input size the weights were trained at, the size a render uses unless --size says otherwise "
                   f"(the size the model declares, else {DEFAULT_SIZE}, at which the defaults were measured), "
                   "where the weights come from, description.")

    p = sub.add_parser("layers", help="the layer table of a model", description="Print every layer that runs "
                       "in a forward pass with its type, output shape and channel count.")
    _add_model_args(p)
    p.add_argument("--size", type=_size, default=None,
                   help="input side (default: the size a render of the model uses, as `render` picks it)")
    p.add_argument("--filter", default=None, help="only layers whose name contains this text")

    p = sub.add_parser("render", help="render one channel to a PNG", description="Optimize an image that "
                       "excites one channel of one layer and write it as a PNG.")
    _add_model_args(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--target", "-t", help="'layer:channel' (e.g. blocks.10:7), 'layer:channel:x:y' (a neuron) "
                      "or 'layer' (DeepDream)")
    what.add_argument("--class", dest="class_name", metavar="NAME", help="a class visualization: the output of this "
                      "class, by name (e.g. 'Egyptian cat': the model's own labels for registry and Hugging Face "
                      "models, else ImageNet's) or index")
    p.add_argument("--output", "-o", default=None, help="PNG path (default: MODEL_TARGET.png)")
    _add_render_args(p)

    p = sub.add_parser("layer", help="render many channels of a layer into a grid PNG", description="Render "
                       "the chosen channels of one layer in batches and write them as one grid PNG.")
    _add_model_args(p)
    p.add_argument("layer", help="dotted layer name (see 'optim layers MODEL')")
    p.add_argument("--channels", "-c", default="0:16", help="'0:16', '3,5,9' or 'all' (default 0:16)")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="channels per batch (default 8)")
    p.add_argument("--per-row", type=_positive_int, default=8, help="grid columns (default 8)")
    p.add_argument("--output", "-o", default=None, help="PNG path (default: MODEL_LAYER.png)")
    _add_render_args(p)

    p = sub.add_parser("render-model", help="render every channel of some layers into a folder (a resumable "
                       "job; torchrun splits it among processes)", description="Render every channel of the "
                       "chosen layers into OUT (a PNG and a record per channel, index.json, a contact sheet per "
                       "layer). Rerun the same command to resume. Under 'torchrun --nproc_per_node N -m optim "
                       "render-model ...' the channels are split among the N processes (the same bytes as one "
                       "process); with --device cuda each process uses cuda:LOCAL_RANK. See docs/scale.md.")
    _add_model_args(p)
    p.add_argument("--layers", "-l", nargs="+", required=True, metavar="LAYER",
                   help="dotted layer names (see 'optim layers MODEL')")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="the job folder (created; rerun into it to "
                   "resume)")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="channels of one layer rendered together "
                   "(default 16; part of the job's settings)")
    _add_render_args(p, quiet_help="no progress line per batch (the summary stays)")

    # `optim app ARGS` is handed to the app's launcher before this parser runs (see main); listed for --help
    sub.add_parser("app", help="launch the Streamlit app (see 'optim app --help')", add_help=False)
    return parser


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def _load(args: argparse.Namespace):
    from .models.loading import WeightsDownloadError, load_model, resolve_device

    device = resolve_device(args.device)  # before anything is built or downloaded
    seed = getattr(args, "seed", None)
    if seed is not None:
        # --seed fixes the whole run: a factory's random initialization too (torch seeds every process anew)
        import torch

        torch.manual_seed(seed)
    try:
        # the user's own files: a TorchScript --weights file is theirs to trust
        return load_model(args.model, weights=args.weights, pretrained=args.pretrained, device=device,
                          allow_torchscript=True, progress=not getattr(args, "quiet", False))
    except WeightsDownloadError as err:
        where = err.url or "its published URL"
        raise CLIError(
            f"optim: error: cannot download the pretrained weights of {err.model!r} from {where} ({err.reason}); "
            "download that file where there is a connection and pass it with --weights FILE, or use --no-pretrained"
        ) from None


def _render_size(args: argparse.Namespace, model: Any) -> Tuple[int, int]:
    """``--size``, else the model's native size, else ``DEFAULT_SIZE`` (``render_inputs``, as ``render_vis``)."""
    from .models.preprocess import render_inputs

    return render_inputs(model, args.size).size


def _render_steps(args: argparse.Namespace) -> int:
    from .optimization.defaults import DEFAULT_STEPS

    return args.steps if args.steps is not None else DEFAULT_STEPS


def _render_lr(args: argparse.Namespace) -> float:
    from .render import DEFAULT_LR

    return args.lr if args.lr is not None else DEFAULT_LR


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import get_model, list_models, model_info
    from .optimization.defaults import DEFAULT_SIZE
    from .models.preprocess import render_inputs

    print(f"{'name':22s} {'trained':9s} {'renders':9s} {'weights':8s}  description")
    for name in list_models():
        info = model_info(name)
        offline = "offline" if info.weights_offline else "download"
        trained = "x".join(map(str, info.input_size))
        try:  # built without weights (cheap for the zoo); a registered factory that cannot build is still listed
            renders = "x".join(map(str, render_inputs(get_model(name)).size))
        except Exception:  # noqa: BLE001 - any failure of a user's factory: the size is unknown, not an error
            renders = "?"
        print(f"{name:22s} {trained:9s} {renders:9s} {offline:8s}  {info.description}")
    print("\ntrained: the input size of the published weights; renders: the size a render uses unless --size is "
          f"given (the size the model declares, else {DEFAULT_SIZE}, at which the render defaults were measured)")
    sys.stdout.flush()
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    from .models.selection import layer_table

    model = _load(args)
    rows = layer_table(model, args.size)  # the size a render of it uses, unless --size says otherwise
    if args.filter:
        rows = [r for r in rows if args.filter in r.name]
    width = max([len(r.name) for r in rows] + [5])
    kind = max([len(r.type) for r in rows] + [18])
    print(f"{'layer':{width}s}  {'type':{kind}s}  {'output shape':18s}  channels")
    for r in rows:
        shape = "x".join(map(str, r.shape)) if r.shape else "-"
        print(f"{r.name:{width}s}  {r.type:{kind}s}  {shape:18s}  {r.channels if r.channels is not None else '-'}")
    sys.stdout.flush()
    return 0


def _registry_labels(spec: str) -> Optional[Sequence[str]]:
    """The class names of a registry model's outputs (``None`` for a factory: the model's own, else ImageNet's)."""
    from .models import list_models, model_info

    return model_info(spec).labels if spec in list_models() else None


def _cmd_render(args: argparse.Namespace) -> int:
    from .models.selection import class_index
    from .optimization.defaults import model_input_channels
    from .recipes.classes import class_logits
    from .render import default_image, render_vis

    name = args.target if args.target is not None else f"class_{args.class_name}"
    output = Path(args.output or f"{_slug(args.model)}_{_slug(name)}.png")
    _check_output(output)
    labels = _registry_labels(args.model)
    if args.class_name is not None and labels is not None:
        class_index(args.class_name, labels)  # an unknown name fails before the weights download
    model = _load(args)
    # a model without a classification head, or with other classes than the names, fails at the first step
    objective = args.target if args.class_name is None else class_logits(model, args.class_name, labels=labels)[0]
    (image,) = render_vis(
        model, objective, image=default_image(_render_size(args, model), channels=model_input_channels(model)),
        thresholds=(_render_steps(args),), lr=_render_lr(args),
        progress=not args.quiet, seed=args.seed, average=args.average,
    )
    _save(image[0], output)
    _print(output)
    return 0


def _cmd_layer(args: argparse.Namespace) -> int:
    import torch

    from .images import make_grid_image
    from .models.selection import channel_units, parse_channels
    from .render import render_layer

    output = Path(args.output or f"{_slug(args.model)}_{_slug(args.layer)}.png")
    _check_output(output)
    model = _load(args)
    size = _render_size(args, model)
    ((count, unit),) = channel_units(model, [args.layer], size)
    channels = parse_channels(args.channels, count, layer=args.layer, unit=unit)
    tiles = render_layer(
        model, args.layer, channels=channels, batch_size=args.batch_size, steps=_render_steps(args), size=size,
        lr=_render_lr(args), progress=not args.quiet, seed=args.seed, average=args.average,
    )
    grid = make_grid_image(tiles.as_subclass(torch.Tensor).detach().cpu().float(), images_per_row=args.per_row)
    _save(grid[0], output)
    _print(output)
    return 0


def job_device(device: Optional[str], env: Optional[Mapping[str, str]] = None) -> Any:
    """The device of this process of a render job: ``cuda:LOCAL_RANK`` for ``cuda`` under ``torchrun``.

    Args:
        device: ``--device`` (``None``: CUDA when available, else the CPU).
        env: the environment (default ``os.environ``); ``LOCAL_RANK`` is set by ``torchrun``.

    Returns:
        The ``torch.device``: a CUDA device without an index becomes ``cuda:LOCAL_RANK`` (one process per GPU
        of the node); an explicit index, the CPU and other devices are kept.

    Raises:
        ValueError: the device is not available, or ``LOCAL_RANK`` names a GPU this machine does not have
            (more processes per node than GPUs).

    >>> job_device("cpu", {"LOCAL_RANK": "1"})
    device(type='cpu')
    """
    import torch

    from .models.loading import resolve_device

    env = os.environ if env is None else env
    dev = resolve_device(device)
    local = env.get("LOCAL_RANK")
    if dev.type != "cuda" or dev.index is not None or local is None:
        return dev
    try:
        index = int(local)
    except ValueError:
        raise ValueError(f"LOCAL_RANK must be an int (torchrun sets it), got {local!r}") from None
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise ValueError(f"this process has LOCAL_RANK {index}, but this machine has {count} CUDA device(s): "
                         f"start at most {count} processes per node with --device cuda (--nproc_per_node {count})")
    return torch.device("cuda", index)


def _check_out_dir(out: Path) -> None:
    """Fail before the model loads when the job folder cannot be one."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; the job needs a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "job.json").is_file():
        raise ValueError(f"--out {str(out)!r} is a folder that holds no render job (no job.json); use an empty "
                         "or a new folder")


def _cmd_render_model(args: argparse.Namespace) -> int:
    import torch

    from .jobs import render_model

    out = Path(args.out).expanduser()
    if os.environ.get("RANK", "0") == "0":  # the other ranks may already see rank 0 setting the folder up
        _check_out_dir(out)
    device = job_device(args.device)  # before anything is built or downloaded
    if device.type == "cuda":
        torch.cuda.set_device(device)
    args.device = str(device)
    model = _load(args)
    render_model(model, args.layers, out, steps=_render_steps(args), size=args.size,
                 batch_size=args.batch_size, lr=args.lr, seed=args.seed, average=args.average,
                 progress=not args.quiet, log=_print, model_name=args.model)
    return 0


def _check_output(output: Path) -> None:
    """Fail before a long render, not after it; the output's folder is created as needed."""
    if output.suffix.lower() != ".png":
        raise ValueError(f"the output must be a .png file, got {str(output)!r}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the output folder {str(output.parent)!r}: {err.strerror}") from None


def _save(image: Any, output: Path) -> None:
    """Write the PNG atomically: a failed or interrupted write leaves the previous file as it was."""
    from .images.export import save_png

    save_png(image, output)


def _print(*values: Any) -> None:
    """print, flushed at once, so a closed pipe is noticed here (and handled by main), not at exit."""
    print(*values)
    sys.stdout.flush()


def _cmd_app(argv: Sequence[str]) -> int:
    """``optim app ARGS``: the app's launcher in a child process (``python -m optim.app ARGS``), which gets this
    process's SIGTERM / SIGINT / SIGHUP and stops the Streamlit server."""
    from ._process import run_forwarding_signals

    return run_forwarding_signals([sys.executable, "-m", "optim.app", *argv])


_COMMANDS = {
    "models": _cmd_models,
    "layers": _cmd_layers,
    "render": _cmd_render,
    "layer": _cmd_layer,
    "render-model": _cmd_render_model,
}


def _silence_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null, so the interpreter's final flush raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured by a test)
        pass


@contextlib.contextmanager
def _working_directory_importable() -> Iterator[None]:
    """Let a ``module:function`` factory in the working directory import under the ``optim`` console script, as
    it does under ``python -m optim`` (whose ``sys.path`` starts with that directory). Appended, not put first as
    ``python -m`` does: under the console script an installed package of the same name wins over a file
    there, and a file never shadows a package the library imports; removed afterwards."""
    cwd = os.getcwd()
    added = "" not in sys.path and cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success (also when a reader closed the output pipe early), 2 for a user-caused
        failure (after one line on stderr), 130 when interrupted; for ``app``, the server's exit code.

    >>> main(["render", "efficientnet_lite0", "-t", "blocks.10:7", "--steps", "0"])
    2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["app"]:
        try:
            return _cmd_app(argv[1:])
        except OSError as err:
            print(f"optim: error: cannot start the app's launcher: {err}", file=sys.stderr)
            return 2
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        with _working_directory_importable():
            return _COMMANDS[args.command](args)
    except SystemExit as exit_:  # --help / --version
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    except BrokenPipeError:  # `optim layers ... | head`: the reader has all it wants
        _silence_stdout()
        return 0
    except CLIError as err:
        print(f"{err}", file=sys.stderr)
    except KeyboardInterrupt:
        print("optim: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, ImportError, OSError, KeyError, IndexError, RuntimeError, MemoryError,
            FloatingPointError) as err:
        if os.environ.get("OPTIM_TRACEBACK"):
            raise
        from ._utils import is_out_of_memory

        if is_out_of_memory(err):
            message = ("out of memory: " + (" ".join(str(err).split())[:200] or type(err).__name__)
                       + " (try a smaller --size or --batch-size, or --device cpu)")
        else:
            message = " ".join(str(err).split()) or type(err).__name__
        print(f"optim: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
