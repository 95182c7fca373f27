"""Launching the app: ``optim app``, ``optim-app`` and ``python -m optim.app`` all end here.

Safe by default:

- The server listens on ``127.0.0.1`` (this machine only). ``--address HOST`` listens elsewhere, and the
  start-up message says so, with a warning when the address is reachable from other machines.
- Uploads are state dicts, read with ``weights_only=True`` into a registry architecture, at most
  ``--max-upload-mb`` MiB (also Streamlit's own limit). TorchScript uploads exist only with
  ``--unsafe-allow-torchscript`` (loading one runs the code stored in it).
- The "Python factory" source exists only with ``--unsafe-allow-factory MODULE:FUNCTION`` (repeatable;
  ``MODULE:*`` allows the functions and classes the module defines, not what it imports): the allow-list is
  checked before anything is imported.
- Galleries live under the data root chosen here (``--data-dir``); the sidebar can only pick a folder inside.
- SIGTERM, SIGINT and SIGHUP stop the Streamlit server (the launcher forwards them and waits).

The launcher passes its settings to the Streamlit script after ``--``; :func:`app_config` reads them there.

>>> app_config(["--data-dir", "/srv/g", "--unsafe-allow-factory", "nets:small"]).factories
('nets:small',)
>>> announcement(build_parser().parse_args(["--address", "0.0.0.0", "--data-dir", "/srv/g"]))[0]
'optim app: WARNING: listening on 0.0.0.0:8501, which other machines can reach: anyone who can connect can render on this server and browse its galleries'
"""
from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .._process import run_forwarding_signals
from .gallery import default_data_dir

__all__ = [
    "AppConfig",
    "app_config",
    "build_parser",
    "app_command",
    "announcement",
    "main",
    "DEFAULT_ADDRESS",
    "DEFAULT_PORT",
    "DEFAULT_MAX_UPLOAD_MB",
]

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 8501
DEFAULT_MAX_UPLOAD_MB = 100

_APP_SCRIPT = Path(__file__).with_name("streamlit_app.py")
# (optim.models.loading.TORCHSCRIPT_RISK says the same; not imported, so that the launcher never loads torch)
_TORCHSCRIPT_RISK = "loading one runs the code stored in it, which can read and write files on this machine"
_FACTORY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:(\*|[A-Za-z_][A-Za-z0-9_.]*)$")
# Streamlit options that the launcher's own flags set: given after "--" they would silently override them.
_RESERVED = {"--server.address": "--address", "--server.port": "--port", "--server.maxUploadSize": "--max-upload-mb"}


@dataclass(frozen=True)
class AppConfig:
    """What the operator chose at launch (the Streamlit script reads it from its arguments).

    Args:
        data_root: the folder every gallery of the app lives in.
        max_upload_mb: the upload size limit in MiB.
        allow_torchscript: accept TorchScript uploads.
        factories: the allowed ``module:function`` factories (empty: no factory field).
    """

    data_root: Path
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
    allow_torchscript: bool = False
    factories: Tuple[str, ...] = ()

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 2**20


def _positive(what: str, maximum: Optional[int] = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, got {text!r}") from None
        if value < 1 or (maximum is not None and value > maximum):
            allowed = f"1..{maximum}" if maximum else "a positive integer"
            raise argparse.ArgumentTypeError(f"{what} must be {allowed}, got {value}")
        return value

    return parse


def _factory(text: str) -> str:
    if not _FACTORY.match(text.strip()):
        raise argparse.ArgumentTypeError(
            f"a factory looks like 'package.module:function' or 'package.module:*', got {text!r}"
        )
    return text.strip()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(prog: str = "optim app") -> argparse.ArgumentParser:
    """The launcher's arguments (``optim app --help``)."""
    p = _Parser(
        prog=prog,
        description="Launch the Streamlit app (needs the 'app' extra). Arguments after '--' go to "
        "'streamlit run'.",
    )
    p.add_argument("--data-dir", "--data-root", dest="data_root", default=None, metavar="DIR",
                   help="the data root: every gallery of the app lives inside it (default: $OPTIM_DATA_DIR or "
                   "~/.local/share/optim-gallery)")
    p.add_argument("--address", default=DEFAULT_ADDRESS,
                   help=f"the address to listen on (default {DEFAULT_ADDRESS}: this machine only; 0.0.0.0 makes "
                   "the app reachable from other machines)")
    p.add_argument("--port", type=_positive("--port", 65535), default=DEFAULT_PORT,
                   help=f"the port (default {DEFAULT_PORT})")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.add_argument("--max-upload-mb", type=_positive("--max-upload-mb"), default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"the upload size limit in MiB (default {DEFAULT_MAX_UPLOAD_MB})")
    p.add_argument("--unsafe-allow-torchscript", action="store_true",
                   help=f"accept TorchScript uploads: {_TORCHSCRIPT_RISK}; only where every user is trusted")
    p.add_argument("--unsafe-allow-factory", action="append", type=_factory, default=[], metavar="MODULE:FUNCTION",
                   help="show the 'Python factory' source, limited to this factory (repeatable; 'MODULE:*' for "
                   "every function and class a module defines): the server imports and calls what is named there")
    p.add_argument("streamlit_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def app_config(argv: Sequence[str]) -> AppConfig:
    """The :class:`AppConfig` from the Streamlit script's arguments (unknown arguments are ignored).

    Without arguments (``streamlit run streamlit_app.py``), everything unsafe is off.
    """
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--data-dir", "--data-root", dest="data_root", default=None)
    p.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB)
    p.add_argument("--unsafe-allow-torchscript", action="store_true")
    p.add_argument("--unsafe-allow-factory", action="append", default=[])
    known, _ = p.parse_known_args(list(argv))
    root = Path(known.data_root).expanduser().resolve() if known.data_root else default_data_dir().resolve()
    factories = tuple(f.strip() for f in known.unsafe_allow_factory if _FACTORY.match(f.strip()))
    return AppConfig(root, max(1, known.max_upload_mb), bool(known.unsafe_allow_torchscript), factories)


def _data_root(args: argparse.Namespace) -> Path:
    return Path(args.data_root).expanduser().resolve() if args.data_root else default_data_dir().resolve()


def _is_loopback(address: str) -> bool:
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def announcement(args: argparse.Namespace) -> List[str]:
    """The start-up lines (written to stderr): where the app listens, and every unsafe option that is on."""
    host = f"[{args.address}]" if ":" in args.address else args.address
    if _is_loopback(args.address):
        lines = [f"optim app: serving http://{host}:{args.port} to this machine only "
                 "(--address HOST to listen elsewhere)"]
    else:
        lines = [f"optim app: WARNING: listening on {host}:{args.port}, which other machines can reach: anyone who "
                 "can connect can render on this server and browse its galleries"]
    lines.append(f"optim app: galleries under {_data_root(args)}; uploads up to {args.max_upload_mb} MiB")
    if args.unsafe_allow_torchscript:
        lines.append(f"optim app: WARNING: --unsafe-allow-torchscript: uploaded TorchScript files are loaded, and "
                     f"{_TORCHSCRIPT_RISK}")
    if args.unsafe_allow_factory:
        lines.append("optim app: WARNING: --unsafe-allow-factory: the server imports and calls "
                     + ", ".join(args.unsafe_allow_factory))
    return lines


def app_command(args: argparse.Namespace) -> List[str]:
    """The ``streamlit run`` command line for the parsed launcher arguments.

    Raises:
        ValueError: an argument after ``--`` that sets what a launcher flag sets (``--server.address`` ...).
    """
    extra = [a for a in args.streamlit_args if a != "--"]
    for arg in extra:
        name = arg.split("=", 1)[0]
        if name in _RESERVED:
            raise ValueError(f"{name} is set by optim app's {_RESERVED[name]} flag; use that instead")
    command = [
        sys.executable, "-m", "streamlit", "run", str(_APP_SCRIPT),
        "--server.address", args.address,
        "--server.port", str(args.port),
        "--server.maxUploadSize", str(args.max_upload_mb),
        "--browser.gatherUsageStats", "false",
    ]
    if args.headless:
        command += ["--server.headless", "true"]
    command += extra
    command += ["--", "--data-dir", str(_data_root(args)), "--max-upload-mb", str(args.max_upload_mb)]
    if args.unsafe_allow_torchscript:
        command.append("--unsafe-allow-torchscript")
    for spec in args.unsafe_allow_factory:
        command += ["--unsafe-allow-factory", spec]
    return command


def main(argv: Optional[Sequence[str]] = None, prog: str = "optim app") -> int:
    """Parse the launcher's arguments, announce, and run the Streamlit server until it stops.

    Returns:
        The server's exit code (2 for a bad argument or a missing Streamlit).
    """
    args = build_parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        print(f"{prog}: error: the app needs Streamlit: pip install 'optim-vis[app]'", file=sys.stderr)
        return 2
    try:
        command = app_command(args)
    except ValueError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    for line in announcement(args):
        print(line, file=sys.stderr, flush=True)
    return run_forwarding_signals(command)
