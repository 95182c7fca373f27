"""The optim Streamlit app: pick a model, browse its layers, render channels, keep every render in a gallery.

Run it with ``optim app [--data-dir ROOT]`` (see :mod:`optim.app.launch` for the flags; ``streamlit run
streamlit_app.py -- --data-dir ROOT`` works too, with every unsafe option off). The data root comes from
``--data-dir``, else ``$OPTIM_DATA_DIR``, else the per-user data directory; the sidebar's gallery folder is a
folder inside it, and a path that leaves it is refused. Renders are looked up in the gallery before anything is
optimized, so nothing is rendered twice. The Gallery tab also opens the folders of ``optim render-model`` runs
found under the data root (:mod:`optim.app.runs`), finished or still going.

What a browser user can make the server do is limited to what the operator allowed at launch: registry models,
state-dict uploads (read with ``weights_only=True``, size-limited), and only with the launch flags TorchScript
uploads and an allow-listed "Python factory".
"""
from __future__ import annotations

import hashlib
import math
import sqlite3
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import streamlit as st

from optim.app.gallery import Gallery
from optim.app.launch import AppConfig, app_config
from optim.app.rendering import RenderSettings, render_channels
from optim.app.runs import find_runs, open_run, size_text
from optim.models.loading import load_factory, load_model, load_weights_file, weights_hash
from optim.models.preprocess import render_inputs
from optim.models.selection import layer_table, parse_channels, renderable_layers
from optim.optimization.defaults import DEFAULT_LR, DEFAULT_STEPS

__all__: List[str] = []

ZOO, UPLOAD, FACTORY = "Model zoo", "Upload weights", "Python factory"
TORCHSCRIPT_NONE = "(TorchScript: none)"
GALLERY_RENDERS, GALLERY_RUNS = "Renders made here", "Render-model runs"
RUN_PAGE = 96  # images of a run shown at once
# sqlite3.Error: a gallery index that is busy, read-only or on a full disk (the Gallery passes SQLite's own error)
_USER_ERRORS = (ValueError, TypeError, ImportError, OSError, RuntimeError, sqlite3.Error)


def _sources(config: AppConfig) -> Tuple[str, ...]:
    """The model sources this launch allows (the factory field only with --unsafe-allow-factory)."""
    return (ZOO, UPLOAD, FACTORY) if config.factories else (ZOO, UPLOAD)


@dataclass
class LoadedModel:
    """A model with what the app shows about it; ``lock`` serializes renders across browser sessions."""

    name: str
    model: Any
    weights_hash: str
    rows: List[Any]
    lock: Any


def _describe(name: str, model: Any) -> LoadedModel:
    # the layer table at the size a render of the model uses, as `optim layers` prints it
    return LoadedModel(name, model, weights_hash(model), layer_table(model), threading.Lock())


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def _load_named(spec: str, pretrained: bool, allowed_factories: Tuple[str, ...] = ()) -> LoadedModel:
    name = spec if pretrained or ":" in spec else f"{spec} (random)"
    model = load_model(spec, pretrained=pretrained, allowed_factories=allowed_factories)
    return _describe(name, model)


@st.cache_resource(show_spinner="Loading the uploaded model...", max_entries=4)
def _load_upload(
    file_name: str, digest: str, data: bytes, architecture: str, allow_torchscript: bool, max_bytes: int
) -> LoadedModel:
    if architecture:
        # a state dict into a registry architecture, read with weights_only=True; a TorchScript file is
        # refused unless the operator allowed it (load_model checks before anything in the file is read);
        # allowed_factories=() refuses a "module:function" sent in place of a registry name
        model = load_model(architecture, weights=data, allow_torchscript=allow_torchscript, max_bytes=max_bytes,
                           allowed_factories=())
    else:
        model = load_weights_file(data, None, allow_torchscript=allow_torchscript, max_bytes=max_bytes)
    return _describe(f"upload:{file_name}", model)


def _sidebar(config: AppConfig) -> tuple:
    """Model choice, settings and gallery folder from the sidebar."""
    from optim.models import list_models, model_info

    side = st.sidebar
    side.header("Model")
    source = side.radio("Source", _sources(config), key="source")
    loaded: Optional[LoadedModel] = None
    try:
        if source == ZOO:
            names = list_models(offline_only=True) or list_models()
            spec = side.selectbox("Model", names, key="zoo_model",
                                  format_func=lambda n: f"{n} ({model_info(n).input_size[0]} px)")
            pretrained = side.checkbox("Pretrained weights", value=True, key="pretrained")
            loaded = _load_named(spec, pretrained)
        elif source == FACTORY:
            allowed = ", ".join(config.factories)
            spec = side.text_input("Factory", placeholder=config.factories[0], key="factory",
                                   help=f"allowed by the operator: {allowed}").strip()
            if spec:
                load_factory(spec, allowed=config.factories)  # allow-list first, then a clear message for a bad path
                loaded = _load_named(spec, True, config.factories)
        else:
            kinds = "a state dict or a TorchScript file" if config.allow_torchscript else "a state dict"
            upload = side.file_uploader(f"Weights: {kinds} (at most {config.max_upload_mb} MiB)",
                                        type=["pt", "pth", "ts", "bin"], key="upload")
            choices = ([TORCHSCRIPT_NONE] if config.allow_torchscript else []) + list_models()
            architecture = side.selectbox("Architecture the weights belong to", choices, key="architecture")
            if upload is not None:
                if upload.size > config.max_upload_bytes:
                    raise ValueError(f"{upload.name!r} is {upload.size / 2**20:.1f} MiB, over the limit of "
                                     f"{config.max_upload_mb} MiB")
                data = upload.getvalue()
                arch = "" if architecture == TORCHSCRIPT_NONE else architecture
                loaded = _load_upload(upload.name, hashlib.sha256(data).hexdigest(), data, arch,
                                      config.allow_torchscript, config.max_upload_bytes)
    except _USER_ERRORS as err:
        side.error(" ".join(str(err).split()))
    side.header("Render settings")
    # no size of the app's own: empty is the model's native size, else DEFAULT_SIZE (as every render)
    native = size_text(render_inputs(loaded.model).size) if loaded is not None else "the model's"
    size = side.number_input("Image size (px)", 16, 512, None, step=16, key="size",
                             placeholder=f"auto: {native}", help="empty: the model's native size, else the "
                             "library's default")
    settings = RenderSettings(
        size=None if size is None else int(size),
        steps=int(side.number_input("Steps", 1, 4096, DEFAULT_STEPS, step=32, key="steps")),
        seed=int(side.number_input("Seed", 0, 2**31 - 1, 0, key="seed")),
        lr=float(side.number_input("Learning rate", 0.001, 1.0, DEFAULT_LR, step=0.01, format="%.3f", key="lr")),
    )
    side.header("Gallery")
    data_dir = side.text_input("Gallery folder", value="", key="data_dir", placeholder="(the data root)",
                               help=f"a folder inside the data root {config.data_root}, chosen at launch")
    return loaded, settings, data_dir


def _show_grid(entries: Sequence[Any], columns: int = 6, detail: bool = False, caption_of: Any = None) -> None:
    for start in range(0, len(entries), columns):
        cols = st.columns(columns)
        for col, entry in zip(cols, entries[start : start + columns]):
            caption = entry.caption if caption_of is None else caption_of(entry)
            if detail:
                s = entry.settings
                caption = f"{entry.model} · {caption} · {size_text(s.get('size'))}px {s.get('steps')} steps"
            col.image(str(entry.path), caption=caption, width="stretch")


def _layers_tab(loaded: LoadedModel) -> None:
    st.caption(f"{len(loaded.rows)} layers ran in a forward pass; weights hash {loaded.weights_hash}")
    st.dataframe(
        [
            {"layer": r.name, "type": r.type, "output shape": " x ".join(map(str, r.shape or ())),
             "channels": r.channels}
            for r in loaded.rows
        ],
        hide_index=True,
    )


def _render_tab(loaded: LoadedModel, settings: RenderSettings, gallery: Gallery) -> None:
    layers = renderable_layers(loaded.rows)
    if not layers:
        st.warning("This model has no layer with an NCHW feature map to render.")
        return
    by_name = {r.name: r for r in layers}
    layer = st.selectbox("Layer", list(by_name), key="layer",
                         format_func=lambda n: f"{n}  ({by_name[n].type}, {by_name[n].channels} channels)")
    n_channels = by_name[layer].channels
    settings = settings.for_model(loaded.model)  # the size this render uses, as the gallery keys on it
    key = dict(model=loaded.name, weights_hash=loaded.weights_hash, layer=layer, settings=settings.as_dict())
    if gallery.read_only:  # a render could not be stored: the buttons show what the gallery has, and render nothing
        st.info(f"The gallery folder {gallery.data_dir} is read-only for this user: the buttons show the renders it "
                "has and render nothing; choose a folder you can write to render.")
    left, right = st.columns(2)
    channel = int(left.number_input("Channel", 0, n_channels - 1, 0, key="channel"))
    if left.button("Render channel", key="render_channel", type="primary"):
        with st.spinner(f"Rendering {layer}:{channel}..."), loaded.lock:
            entry, hit = gallery.get_or_render(
                channel=channel, render=lambda: render_channels(loaded.model, layer, [channel], settings)[0], **key
            )
        st.session_state["shown"] = (layer, [channel])
        st.session_state["message"] = f"{entry.caption}: {'from the gallery' if hit else 'rendered'}"
    selection = right.text_input("Channels", value=f"0:{min(n_channels, 16)}", key="channels",
                                 help="'0:16', '3,5,9' or 'all'")
    batch = int(right.number_input("Batch size", 1, 64, 8, key="batch_size"))
    if right.button("Render layer", key="render_layer"):
        try:
            channels = parse_channels(selection, n_channels, layer=layer)
        except ValueError as err:
            st.error(str(err))
            return
        missing = gallery.missing_channels(channels=channels, **key)
        bar = st.progress(0.0, text=f"{len(channels) - len(missing)} of {len(channels)} channels in the gallery")

        def store(done: int, total: int, chunk: List[int], tiles: Any) -> None:
            for c, tile in zip(chunk, tiles):
                gallery.add(channel=c, image=tile, **key)
            bar.progress(done / total, text=f"rendered {done} of {total} missing channels")

        if missing and gallery.read_only:  # refused before any render, as get_or_render refuses one channel
            st.warning(f"{len(missing)} of {len(channels)} channels are not in this read-only gallery "
                       f"({layer}:{', '.join(map(str, missing[:8]))}{', ...' if len(missing) > 8 else ''})")
            channels, missing = [c for c in channels if c not in missing], []
        if missing:
            with loaded.lock:
                render_channels(loaded.model, layer, missing, settings, batch_size=batch, callback=store)
        bar.progress(1.0, text="done")
        st.session_state["shown"] = (layer, channels)
        st.session_state["message"] = (
            f"{layer}: {len(channels) - len(missing)} from the gallery, {len(missing)} rendered"
        )
    if "message" in st.session_state:
        st.success(st.session_state["message"])
    shown_layer, shown_channels = st.session_state.get("shown", (None, []))
    if shown_layer == layer:
        entries = [gallery.get(channel=c, **key) for c in shown_channels]
        _show_grid([e for e in entries if e is not None])


def _run_caption(entry: Any) -> str:
    after = entry.objective_after
    return f"{entry.channel} · {after:.3g}" if after is not None else str(entry.channel)


def _runs_view(config: AppConfig) -> None:
    """A render-model run's folder under the data root: its settings and its images, layer by layer."""
    root = config.data_root
    runs = find_runs(root)
    names = [r.relative_to(root).as_posix() or "." for r in runs]
    left, right = st.columns(2)
    chosen = left.selectbox("Run folder", names, key="run_folder") if names else None
    typed = right.text_input("Or a folder inside the data root", key="run_path",
                             help=f"a folder written by 'optim render-model ... --out DIR', inside {root}").strip()
    folder = typed or chosen
    if not folder:
        st.info(f"No render-model run under {root}: run 'optim render-model MODEL --layers ... --out {root}/NAME' "
                "(see docs/scale.md), then reload.")
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = open_run(folder, root=root)
    for warning in caught:
        st.warning(str(warning.message))
    st.caption(run.summary())
    layers = run.layers()
    if not layers:
        st.info("No channel of this run is rendered yet.")
        return
    layer = st.selectbox("Layer", layers, key="run_layer",
                         format_func=lambda n: f"{n}  ({len(run.entries(n))} channels)")
    entries = run.entries(layer)
    pages = math.ceil(len(entries) / RUN_PAGE)
    page = int(st.number_input(f"Page (of {pages})", 1, pages, 1, key="run_page")) if pages > 1 else 1
    shown = entries[(page - 1) * RUN_PAGE : page * RUN_PAGE]
    st.caption(f"channels {shown[0].channel} to {shown[-1].channel} of {layer}; under each image its channel and "
               "its objective (mean activation) after rendering")
    _show_grid(shown, caption_of=_run_caption)


def _gallery_tab(gallery: Gallery, config: AppConfig) -> None:
    source = st.radio("Show", (GALLERY_RENDERS, GALLERY_RUNS), key="gallery_source", horizontal=True)
    if source == GALLERY_RUNS:
        _runs_view(config)
        return
    models = gallery.models()
    if not models:
        st.info(f"The gallery in {gallery.data_dir} is empty: render a channel or a layer first.")
        return
    left, right = st.columns(2)
    model = left.selectbox("Model", ["(all)"] + models, key="gallery_model")
    layers = gallery.layers(model) if model != "(all)" else []
    layer = right.selectbox("Layer", ["(all)"] + layers, key="gallery_layer")
    entries = gallery.entries(
        model=None if model == "(all)" else model, layer=None if layer == "(all)" else layer
    )
    st.caption(f"{len(entries)} renders in {gallery.data_dir}")
    _show_grid(entries, detail=True)


def main() -> None:
    """Lay out the app (Streamlit runs this script top to bottom on every interaction)."""
    st.set_page_config(page_title="optim feature visualization", layout="wide")
    st.title("optim: feature visualization")
    config = app_config(sys.argv[1:])
    loaded, settings, data_dir = _sidebar(config)
    try:
        gallery = Gallery(data_dir, root=config.data_root)
    except _USER_ERRORS as err:
        st.error(f"cannot use the gallery folder {data_dir!r}: {' '.join(str(err).split())}")
        return
    if loaded is not None:
        st.caption(f"Model **{loaded.name}** · {len(renderable_layers(loaded.rows))} renderable layers")
    render, layers, browse = st.tabs(["Render", "Layers", "Gallery"])
    if loaded is None:
        render.info("Choose a model in the sidebar.")
    else:
        with render:
            try:
                _render_tab(loaded, settings, gallery)
            except _USER_ERRORS as err:
                st.error(" ".join(str(err).split()))
        with layers:
            _layers_tab(loaded)
    with browse:  # last, so that it lists what this run rendered
        try:
            _gallery_tab(gallery, config)
        except _USER_ERRORS as err:
            st.error(" ".join(str(err).split()))


main()
