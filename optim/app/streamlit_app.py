"""The optim Streamlit app: pick a model, browse its layers, render channels, keep every render in a gallery.

Run it with ``optim app [--data-dir DIR]`` (or ``streamlit run streamlit_app.py -- --data-dir DIR``). The
gallery directory comes from, in order: the sidebar field, ``--data-dir``, ``$OPTIM_DATA_DIR``, the per-user
data directory. Renders are looked up in the gallery before anything is optimized, so nothing is rendered
twice.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import threading
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import streamlit as st

from optim.app.gallery import Gallery, resolve_data_dir
from optim.app.model_source import load_factory, load_model, load_weights_file, weights_hash
from optim.app.rendering import RenderSettings, layer_table, native_input_size, render_channels, renderable_layers
from optim.cli import parse_channels
from optim.render import DEFAULT_LR

__all__: List[str] = []

SOURCES = ("Model zoo", "Python factory", "Upload a file")
_USER_ERRORS = (ValueError, TypeError, ImportError, OSError, RuntimeError)


def _cli_data_dir(argv: Sequence[str]) -> Optional[str]:
    """``--data-dir`` from the arguments after ``streamlit run app.py --`` (others are ignored)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--data-dir", default=None)
    known, _ = parser.parse_known_args(list(argv))
    return known.data_dir


@dataclass
class LoadedModel:
    """A model with what the app shows about it; ``lock`` serializes renders across browser sessions."""

    name: str
    model: Any
    weights_hash: str
    rows: List[Any]
    lock: Any


def _describe(name: str, model: Any, size: int) -> LoadedModel:
    return LoadedModel(name, model, weights_hash(model), layer_table(model, size), threading.Lock())


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def _load_named(spec: str, pretrained: bool) -> LoadedModel:
    name = spec if pretrained or ":" in spec else f"{spec} (random)"
    return _describe(name, load_model(spec, pretrained=pretrained), native_input_size(spec))


@st.cache_resource(show_spinner="Loading the uploaded model...", max_entries=4)
def _load_upload(file_name: str, digest: str, data: bytes, architecture: str) -> LoadedModel:
    if architecture:
        model = load_weights_file(data, load_model(architecture, pretrained=False))
        size = native_input_size(architecture)
    else:
        model = load_weights_file(data)
        size = 224
    return _describe(f"upload:{file_name}", model, size)


def _sidebar() -> tuple:
    """Model choice, settings and gallery directory from the sidebar."""
    from optim.models import list_models, model_info

    side = st.sidebar
    side.header("Model")
    source = side.radio("Source", SOURCES, key="source")
    loaded: Optional[LoadedModel] = None
    try:
        if source == SOURCES[0]:
            names = list_models(offline_only=True) or list_models()
            spec = side.selectbox("Model", names, key="zoo_model",
                                  format_func=lambda n: f"{n} ({model_info(n).input_size[0]} px)")
            pretrained = side.checkbox("Pretrained weights", value=True, key="pretrained")
            loaded = _load_named(spec, pretrained)
        elif source == SOURCES[1]:
            spec = side.text_input("Factory", placeholder="package.module:function", key="factory").strip()
            if spec:
                load_factory(spec)  # a clear message for a bad path before anything is cached
                loaded = _load_named(spec, True)
        else:
            upload = side.file_uploader("State dict or TorchScript file", type=["pt", "pth", "ts", "bin"],
                                        key="upload")
            architecture = side.selectbox(
                "Architecture (for a state dict)", ["(TorchScript: none)"] + list_models(), key="architecture"
            )
            if upload is not None:
                data = upload.getvalue()
                arch = "" if architecture.startswith("(") else architecture
                loaded = _load_upload(upload.name, hashlib.sha256(data).hexdigest(), data, arch)
    except _USER_ERRORS as err:
        side.error(" ".join(str(err).split()))
    side.header("Render settings")
    settings = RenderSettings(
        size=int(side.number_input("Image size (px)", 16, 512, 128, step=16, key="size")),
        steps=int(side.number_input("Steps", 1, 4096, 128, step=32, key="steps")),
        seed=int(side.number_input("Seed", 0, 2**31 - 1, 0, key="seed")),
        lr=float(side.number_input("Learning rate", 0.001, 1.0, DEFAULT_LR, step=0.01, format="%.3f", key="lr")),
    )
    side.header("Gallery")
    default_dir = str(resolve_data_dir(_cli_data_dir(sys.argv[1:])))
    data_dir = side.text_input("Data directory", value=default_dir, key="data_dir")
    return loaded, settings, data_dir


def _show_grid(entries: Sequence[Any], columns: int = 6, detail: bool = False) -> None:
    for start in range(0, len(entries), columns):
        cols = st.columns(columns)
        for col, entry in zip(cols, entries[start : start + columns]):
            caption = entry.caption
            if detail:
                s = entry.settings
                caption = f"{entry.model} · {caption} · {s.get('size')}px {s.get('steps')} steps"
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
    key = dict(model=loaded.name, weights_hash=loaded.weights_hash, layer=layer, settings=settings.as_dict())
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
            channels = parse_channels(selection, n_channels)
        except ValueError as err:
            st.error(str(err))
            return
        missing = gallery.missing_channels(channels=channels, **key)
        bar = st.progress(0.0, text=f"{len(channels) - len(missing)} of {len(channels)} channels in the gallery")

        def store(done: int, total: int, chunk: List[int], tiles: Any) -> None:
            for c, tile in zip(chunk, tiles):
                gallery.add(channel=c, image=tile, **key)
            bar.progress(done / total, text=f"rendered {done} of {total} missing channels")

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


def _gallery_tab(gallery: Gallery) -> None:
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
    loaded, settings, data_dir = _sidebar()
    try:
        gallery = Gallery(data_dir)
    except _USER_ERRORS as err:
        st.error(f"cannot use the gallery directory {data_dir!r}: {' '.join(str(err).split())}")
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
        _gallery_tab(gallery)


main()
