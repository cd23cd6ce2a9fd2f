"""A from-scratch yaml parser for TokenC3-LSNet / YOLOv13 model configs.

:func:`parse_model` has the same contract as ``ultralytics.nn.tasks.parse_model``
(``(d, ch, verbose) -> (nn.Sequential, save)``) and reproduces the user's fork's parsing:

1. ``TokenC3`` (like ``DSC3k``/``DSC3k2``) is parsed like ultralytics' C3: ``c1`` and the width-scaled
   ``c2`` are inserted, the repeat count becomes the third argument, so the remaining yaml args
   arrive as (shortcut, g, ...). ``TokenC3`` turns ``g`` into ``max(1, int(g))``.
2. ``HyperACE``: ``c1`` = channels of its *second* input, ``c2`` width-scaled, the hyperedge count
   scaled by 0.5 at scale n and 1.5 at scale x, the repeats passed as an argument, and channel
   adjustment switched off (an extra ``False`` argument) at scales l and x.
   ``DownsampleConv``: ``c2 = 2 * c1`` (``c2 = c1`` and no channel adjustment at l/x).
   ``FullPAD_Tunnel``: ``c2`` = channels of its first input.
3. ``HyperACE`` or ``DSC3k2`` (and stock ``C3k2``/``A2C2f``/``C2fCIB``) select the v11-style
   ``Detect`` head (depthwise convs in the class branch, ``legacy = False``).

Stock single-input layers (``Conv``, ``nn.Upsample``, ``C3k2``, ...) are delegated to ultralytics'
own ``parse_model``, one layer at a time: the layer is parsed in a two-row yaml whose second row is an
``nn.BatchNorm2d`` probe, whose width is the layer's output channel count. ``Concat`` and ``Detect``
are built here with ultralytics' classes and ultralytics' argument rules.

Layers carry ultralytics' usual attributes (``.i``, ``.f``, ``.type``, ``.np``), so the result drops
into ``ultralytics.nn.tasks.DetectionModel``.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import re
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from ultralytics.nn import tasks as _tasks
from ultralytics.nn.modules import Concat, Conv, Detect
from ultralytics.utils import YAML
from ultralytics.utils.ops import make_divisible

from modprune_tokenc3_lsnet import blocks as B

__all__ = [
    "CFG_DIR",
    "PLUGIN_LAYERS",
    "find_plugin_cfg",
    "load_cfg",
    "parse_model",
    "uses_plugin_modules",
]

log = logging.getLogger(__name__)

#: Directory of the yaml configs shipped with the plugin.
CFG_DIR = Path(__file__).resolve().parent / "cfg"

#: yaml module names this parser builds itself.
PLUGIN_LAYERS: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (
        B.TokenC3,
        B.LSConv,
        B.LSGhostBottleneck,
        B.DynamicLocalMixer,
        B.DSConv,
        B.DSBottleneck,
        B.DSC3k,
        B.DSC3k2,
        B.C3AH,
        B.HyperACE,
        B.DownsampleConv,
        B.FullPAD_Tunnel,
    )
}

_REPEAT_LAYERS = frozenset({B.TokenC3, B.DSC3k, B.DSC3k2})
_NON_LEGACY_STOCK = frozenset({"C3k2", "A2C2f", "C2fCIB"})
_CHANNEL_ADJUST_OFF = frozenset({"l", "x"})
_HYPEREDGE_GAIN = {"n": 0.5, "x": 1.5}
_C3K_SCALES = frozenset({"m", "l", "x"})

# ultralytics' parse_model as imported, used for per-layer delegation (never our own wrapper).
_STOCK_PARSE_MODEL = _tasks.parse_model


@dataclass
class _State:
    """Parsing state shared by the per-layer builders."""

    d: dict[str, Any]
    nc: int
    scale: str
    depth: float
    width: float
    max_channels: float
    ch: list[int]
    legacy: bool = True
    save: list[int] = field(default_factory=list)

    def scale_width(self, c2: int) -> int:
        """Apply the width multiple and channel cap, rounded to a multiple of 8."""
        return int(make_divisible(min(c2, self.max_channels) * self.width, 8))


def uses_plugin_modules(d: dict[str, Any]) -> bool:
    """Return True when any backbone/head row of the model dict names one of :data:`PLUGIN_LAYERS`."""
    rows = list(d.get("backbone") or []) + list(d.get("head") or [])
    return any(len(row) > 2 and row[2] in PLUGIN_LAYERS for row in rows)


def _make_state(d: dict[str, Any], ch: int) -> _State:
    """Read scale constants from the model dict, like ultralytics does."""
    scales = d.get("scales")
    scale = d.get("scale") or ""
    depth, width = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
    max_channels: float = float("inf")
    if scales:
        if not scale:
            scale = next(iter(scales.keys()))
            log.warning("no model scale passed; assuming scale=%r", scale)
        depth, width, max_channels = scales[scale]
    return _State(d=d, nc=d["nc"], scale=scale, depth=depth, width=width, max_channels=max_channels, ch=[ch])


def _resolve_activation(act: Any) -> nn.Module:
    """Resolve a yaml ``activation`` such as ``"nn.ReLU()"`` or ``"nn.LeakyReLU(0.1)"`` without eval."""
    if isinstance(act, nn.Module):
        return act
    node = ast.parse(str(act), mode="eval").body
    if not isinstance(node, ast.Call) or node.keywords:
        raise ValueError(f"unsupported activation {act!r}; use e.g. 'nn.SiLU()'")
    name = ast.unparse(node.func)
    attr = re.fullmatch(r"(?:torch\.)?nn\.(\w+)", name)
    cls = getattr(torch.nn, attr.group(1), None) if attr else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"unsupported activation {act!r}; use e.g. 'nn.SiLU()'")
    return cls(*(ast.literal_eval(a) for a in node.args))


def _literal(value: Any, nc: int) -> Any:
    """Resolve a yaml string argument: ``"nc"`` -> nc, Python literals evaluated, other strings kept."""
    if not isinstance(value, str):
        return value
    if value == "nc":
        return nc
    with contextlib.suppress(ValueError, SyntaxError):
        return ast.literal_eval(value)
    return value


def _stock_class(name: str) -> Any:
    """Look a stock module name up the way ultralytics does (``nn.*`` or ultralytics.nn.tasks' globals)."""
    if name.startswith("nn."):
        return getattr(torch.nn, name[3:])
    return vars(_tasks).get(name)


def _plugin_args(st: _State, f: Any, n: int, cls: type[nn.Module], args: list[Any]) -> tuple[list[Any], int, int]:
    """Return (constructor args, output channels, module copies) for a plugin layer."""
    if cls is B.HyperACE:
        return _hyperace_args(st, f, n, args)
    if cls is B.DownsampleConv:
        c1 = st.ch[f]
        if st.scale in _CHANNEL_ADJUST_OFF:
            return [c1, False], c1, n
        return [c1], 2 * c1, n
    if cls is B.FullPAD_Tunnel:
        return [], st.ch[f[0]], n
    if cls is B.DynamicLocalMixer:
        return [st.ch[f], *args], st.ch[f], n
    c1, c2 = st.ch[f], st.scale_width(args[0])
    args = [c1, c2, *args[1:]]
    if cls in _REPEAT_LAYERS:
        args.insert(2, n)
        n = 1
    if cls is B.DSC3k2:
        st.legacy = False
        if st.scale in _C3K_SCALES:
            args[3:4] = [True]
    return args, c2, n


def _hyperace_args(st: _State, f: Any, n: int, args: list[Any]) -> tuple[list[Any], int, int]:
    """HyperACE: c1 from the second input, scaled hyperedges, repeats as an argument."""
    st.legacy = False
    c1, c2 = st.ch[f[1]], st.scale_width(args[0])
    hyperedges = int(args[1] * _HYPEREDGE_GAIN.get(st.scale, 1.0))
    out = [c1, c2, n, hyperedges, *args[2:]]
    if st.scale in _CHANNEL_ADJUST_OFF:
        out.append(False)
    return out, c2, 1


def _tag(m: nn.Module, i: int, f: Any, type_name: str) -> nn.Module:
    """Attach ultralytics' per-layer attributes ``i``, ``f``, ``type`` and ``np``."""
    m.np = sum(p.numel() for p in m.parameters())
    m.i, m.f, m.type = i, f, type_name
    return m


def _build_plugin(st: _State, i: int, f: Any, n: int, name: str, args: list[Any]) -> tuple[nn.Module, int]:
    """Build one plugin layer."""
    cls = PLUGIN_LAYERS[name]
    args, c2, n = _plugin_args(st, f, n, cls, [_literal(a, st.nc) for a in args])
    m = nn.Sequential(*(cls(*args) for _ in range(n))) if n > 1 else cls(*args)
    return _tag(m, i, f, f"{cls.__module__}.{cls.__qualname__}"), c2


@contextlib.contextmanager
def _detect_legacy(legacy: bool) -> Iterator[None]:
    """Set ``Detect.legacy`` (read in ``Detect.__init__``) for one construction, then restore it."""
    previous = Detect.__dict__.get("legacy", False)
    Detect.legacy = legacy
    try:
        yield
    finally:
        Detect.legacy = previous


def _build_multi_input(st: _State, i: int, f: Any, name: str, args: list[Any]) -> tuple[nn.Module, int]:
    """Build ``Concat`` or ``Detect`` with ultralytics' classes and argument rules."""
    cls = _stock_class(name)
    args = [_literal(a, st.nc) for a in args]
    if cls is Concat:
        return _tag(Concat(*args), i, f, "ultralytics.nn.modules.conv.Concat"), sum(st.ch[x] for x in f)
    if cls is Detect:
        args.extend([st.d.get("reg_max", 16), st.d.get("end2end"), [st.ch[x] for x in f]])
        with _detect_legacy(st.legacy):
            head = Detect(*args)
        head.legacy = st.legacy
        return _tag(head, i, f, "ultralytics.nn.modules.head.Detect"), args[0]
    raise ValueError(f"layer {i}: multi-input module {name!r} is not supported by the TokenC3-LSNet parser")


def _delegate(st: _State, i: int, f: int, n: int, name: str, args: list[Any]) -> tuple[nn.Module, int]:
    """Parse one stock single-input layer with ultralytics' own parse_model and read its width."""
    sub = {k: v for k, v in st.d.items() if k not in ("backbone", "head")}
    sub.update(scale=st.scale, backbone=[[-1, n, name, deepcopy(args)], [-1, 1, "nn.BatchNorm2d", []]], head=[])
    seq, _ = _STOCK_PARSE_MODEL(sub, st.ch[f], verbose=False)
    if name in _NON_LEGACY_STOCK:
        st.legacy = False
    layer = seq[0]
    layer.i, layer.f = i, f
    return layer, int(seq[1].num_features)


def _build_layer(st: _State, i: int, row: list[Any]) -> tuple[nn.Module, int]:
    """Build the module of one yaml row and return it with its output channel count."""
    f, n, name, args = row
    n = max(round(n * st.depth), 1) if n > 1 else n
    if name in PLUGIN_LAYERS:
        return _build_plugin(st, i, f, n, name, list(args))
    if isinstance(f, int):
        return _delegate(st, i, f, n, name, list(args))
    return _build_multi_input(st, i, f, name, list(args))


def parse_model(d: dict[str, Any], ch: int, verbose: bool = True) -> tuple[nn.Sequential, list[int]]:
    """Parse a TokenC3-LSNet / YOLOv13 model dict into (layers, save list), like ultralytics.

    Args:
        d: Model dict (as from ``yaml_model_load``), with ``nc``, ``backbone``, ``head`` and
            optionally ``scales``/``scale``, ``activation``, ``reg_max``, ``end2end``.
        ch: Input channels.
        verbose: Log one line per layer.

    Returns:
        The layers as ``nn.Sequential`` and the sorted indices of layers whose outputs are reused.
    """
    st = _make_state(d, ch)
    default_act = Conv.default_act
    if d.get("activation"):
        Conv.default_act = _resolve_activation(d["activation"])
    try:
        layers = [_add_layer(st, i, row, verbose) for i, row in enumerate(d["backbone"] + d["head"])]
    finally:
        Conv.default_act = default_act
    return nn.Sequential(*layers), sorted(st.save)


#: Value of the ``built_by`` attribute on every top-level layer this parser builds.
BUILT_BY = "TokenC3-LSNet parser"


def _add_layer(st: _State, i: int, row: list[Any], verbose: bool) -> nn.Module:
    """Build one row, record its channels and save-list entries, and log it."""
    m, c2 = _build_layer(st, i, row)
    m.built_by = BUILT_BY  # lets the plugin's detectors tell its models' layers from stock ones
    f = row[0]
    st.save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
    if i == 0:
        st.ch = []
    st.ch.append(c2)
    if verbose:
        log.info("%3d %20s %3s %10d  %-45s %s", i, f, row[1], m.np, m.type, row[3])
    return m


def find_plugin_cfg(name: str | Path) -> Path | None:
    """Return the shipped config a bare yaml name refers to, or None.

    ``yolov13n_lsnet_p2_simple.yaml`` resolves to ``cfg/yolov13_lsnet_p2_simple.yaml`` (the scale letter
    after the version number is dropped, as ultralytics does). Names with a directory part and
    files that exist as given are never redirected.
    """
    path = Path(name)
    if path.parent != Path(".") or path.exists() or path.suffix not in (".yaml", ".yml"):
        return None
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", path.name)
    for candidate in (path.name, unified):
        if (CFG_DIR / candidate).is_file():
            return CFG_DIR / candidate
    return None


def load_cfg(cfg: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Load a model dict: a dict is deep-copied, a shipped config is found by bare name, any other
    path goes to ``ultralytics.nn.tasks.yaml_model_load``. The scale comes from the requested name
    (``yolov13n_...`` -> ``n``)."""
    if isinstance(cfg, dict):
        return deepcopy(cfg)
    shipped = find_plugin_cfg(cfg)
    if shipped is None:
        return _tasks.yaml_model_load(cfg)
    d = YAML.load(shipped)
    d["scale"] = _tasks.guess_model_scale(cfg)
    d["yaml_file"] = str(cfg)
    return d
